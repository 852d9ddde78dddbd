{
  "targets": [
    {
      "target_name": "builder_spawn",
      "sources": ["spawn.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"]
    }
  ]
}
