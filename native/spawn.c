/*
 * builder_spawn: starts a job's process without forking the slave.
 *
 * Node's child_process.spawn (libuv) forks the calling process: the kernel copies the page tables
 * of every page the slave has touched, about 0.08 ms per MB (docs/benchmarks.md, "What spawn()
 * costs"), 1.5-3 ms of the slave's event loop per job. vfork shares the memory instead, so the
 * cost does not grow with the slave's size; the child uses raw system calls only until execve.
 *
 * spawn(file, argv, env, cwd, uid, gid, onExit[, cgroupProcs]) -> [pid, stdoutFd, stderrFd]
 *   - with cgroupProcs (the path of a cgroup v2's cgroup.procs), the process moves itself into
 *     that cgroup first (writes "0" to it), before it can fork anything: what it starts stays in
 *     there, whatever its process group; a failure to join is thrown with syscall 'cgroup';
 *   - the process leads a new session and process group (setsid), stdin is /dev/null, stdout and
 *     stderr are two new pipes whose read ends are returned (close-on-exec, blocking: the caller
 *     wraps them in net.Socket, which makes them non-blocking); no other descriptor is open in it;
 *   - every signal at its default disposition and an empty signal mask (Node ignores SIGPIPE and
 *     blocks signals around this call: neither reaches the job);
 *   - uid and gid (both -1 to keep the slave's): supplementary groups dropped, then the gid and
 *     uid set (real, effective and saved), before the exec, as child_process does with uid/gid;
 *   - `file` without a slash is looked up in the PATH of `env` (not the slave's), as execvp would:
 *     by the child, after chdir and the ids, trying execve on each entry in turn (so relative
 *     entries are taken from `cwd`, and what counts is what the job's user may execute); a file
 *     the kernel cannot execute (ENOEXEC: no #! line) runs under /bin/sh, as execvp would;
 *   - errors before the process runs the program are thrown as an Error with `code` (e.g.
 *     ENOENT), `errno` and `syscall` 'spawn', as child_process reports them;
 *   - onExit(code, signo) runs on the event loop once the process has exited (a pidfd watched by
 *     libuv; the process is reaped here): code is -1 when signal signo ended it.
 * Linux 5.9 or later (pidfd_open, waitid P_PIDFD, close_range): probe() says why not.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <pthread.h>
#include <unistd.h>

#include <node_api.h>
#include <uv.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

typedef struct {
  uv_poll_t poll;
  int pidfd;
  pid_t pid;
  napi_env env;
  napi_ref cb;
  napi_async_context ctx;
} watch_t;

/* Throws an Error like child_process's: message "<sys> <file> <CODE>", code, errno, syscall <sys>. */
static napi_value throw_errno_in(napi_env env, int err, const char *sys_name, const char *file) {
  const char *name = uv_err_name(-err);
  size_t n = strlen(sys_name) + strlen(file) + strlen(name) + 16;
  char *msg = malloc(n);
  if (msg == NULL) {
    napi_throw_error(env, "ENOMEM", "spawn: out of memory");
    return NULL;
  }
  snprintf(msg, n, "%s %s %s", sys_name, file, name);
  napi_value m, code, e, no, sys;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  free(msg);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, m, &e);
  napi_set_named_property(env, e, "code", code);
  napi_create_int32(env, -err, &no);
  napi_set_named_property(env, e, "errno", no);
  napi_create_string_utf8(env, sys_name, NAPI_AUTO_LENGTH, &sys);
  napi_set_named_property(env, e, "syscall", sys);
  napi_throw(env, e);
  return NULL;
}

static napi_value throw_errno(napi_env env, int err, const char *file) {
  return throw_errno_in(env, err, "spawn", file);
}

static napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", msg);
  return NULL;
}

/* A JS string as a new C string; NULL (with a pending TypeError) when it is not a string or holds a NUL. */
static char *get_string(napi_env env, napi_value v, const char *what) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    throw_type(env, what);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL) {
    napi_throw_error(env, "ENOMEM", "spawn: out of memory");
    return NULL;
  }
  size_t got = 0;
  napi_get_value_string_utf8(env, v, s, len + 1, &got);
  if (strlen(s) != got) {
    free(s);
    throw_type(env, what);
    return NULL;
  }
  return s;
}

/* An id argument: an integer number from -1 to 2^31-1 (NaN, infinities and fractions refused). */
static int get_id(napi_env env, napi_value v, int64_t *out) {
  double d = 0;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= -1 && d <= 2147483647.0)) return 0;
  int64_t i = (int64_t)d;
  if ((double)i != d) return 0;
  *out = i;
  return 1;
}

static void free_vec(char **v) {
  if (v == NULL) return;
  for (char **p = v; *p != NULL; p++) free(*p);
  free(v);
}

/* A JS array of strings as a NULL-terminated vector. */
static char **get_vec(napi_env env, napi_value arr, const char *what) {
  bool is_array = false;
  uint32_t n = 0;
  if (napi_is_array(env, arr, &is_array) != napi_ok || !is_array || napi_get_array_length(env, arr, &n) != napi_ok) {
    throw_type(env, what);
    return NULL;
  }
  char **v = calloc((size_t)n + 1, sizeof(char *));
  if (v == NULL) {
    napi_throw_error(env, "ENOMEM", "spawn: out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value item;
    napi_get_element(env, arr, i, &item);
    char *s = get_string(env, item, what);
    if (s == NULL) {
      free_vec(v);
      return NULL;
    }
    v[i] = s;
  }
  return v;
}

/*
 * The paths execvp would try for `file`, in order: `file` itself when it holds a slash, else each
 * entry of the PATH of `env` (the first PATH=, as getenv; "/usr/bin:/bin" without one, as libuv)
 * joined with `file`, an empty entry giving `file` alone (the cwd). Relative candidates stay
 * relative: the child tries them after its chdir. NULL with *err set (ENOENT for "", ENOMEM).
 */
static char **path_candidates(const char *file, char **env, int *err) {
  if (file[0] == '\0') {
    *err = ENOENT;
    return NULL;
  }
  const char *path = NULL;
  size_t n = 1;
  if (strchr(file, '/') == NULL) {
    path = "/usr/bin:/bin";
    for (char **e = env; *e != NULL; e++) {
      if (strncmp(*e, "PATH=", 5) == 0) {
        path = *e + 5;
        break;
      }
    }
    for (const char *q = path; *q != '\0'; q++) n += *q == ':';
  }
  char **v = calloc(n + 1, sizeof(char *));
  if (v == NULL) {
    *err = ENOMEM;
    return NULL;
  }
  if (path == NULL) {
    v[0] = strdup(file);
    if (v[0] == NULL) goto oom;
    return v;
  }
  size_t flen = strlen(file);
  const char *p = path;
  for (size_t i = 0; i < n; i++) {
    const char *end = strchr(p, ':');
    size_t dlen = end == NULL ? strlen(p) : (size_t)(end - p);
    char *cand = malloc(dlen + flen + 2);
    if (cand == NULL) goto oom;
    memcpy(cand, p, dlen);
    size_t k = dlen;
    if (dlen > 0) cand[k++] = '/';
    memcpy(cand + k, file, flen + 1);
    v[i] = cand;
    p = end == NULL ? p + dlen : end + 1;
  }
  return v;
oom:
  free_vec(v);
  *err = ENOMEM;
  return NULL;
}

static void on_closed(uv_handle_t *h) {
  watch_t *w = (watch_t *)h->data;
  close(w->pidfd);
  free(w);
}

static void on_exit_ready(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  watch_t *w = (watch_t *)h->data;
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int r;
  do {
    r = waitid((idtype_t)P_PIDFD, (id_t)w->pidfd, &si, WEXITED | WNOHANG);
  } while (r != 0 && errno == EINTR);
  if (r == 0 && si.si_pid == 0) return; /* not exited yet (a spurious wake-up) */
  int code = -1, signo = 0;
  if (r == 0) {
    if (si.si_code == CLD_EXITED) code = si.si_status;
    else signo = si.si_status;
  } else if (errno != ECHILD) {
    /* waitid cannot use the pidfd (a kernel without P_PIDFD): the pid is still ours, since it
       cannot be reused before it is reaped, and the pidfd said it has exited. */
    int st = 0;
    pid_t got;
    do {
      got = waitpid(w->pid, &st, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got == 0) return;
    if (got == w->pid) {
      if (WIFEXITED(st)) code = WEXITSTATUS(st);
      else if (WIFSIGNALED(st)) signo = WTERMSIG(st);
    }
  }
  /* Still neither (ECHILD: reaped elsewhere): code -1 and signal 0, which the caller reports as a lost status. */
  uv_poll_stop(&w->poll);
  napi_env env = w->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value cb, recv, argv[2];
  napi_get_reference_value(env, w->cb, &cb);
  napi_get_global(env, &recv);
  napi_create_int32(env, code, &argv[0]);
  napi_create_int32(env, signo, &argv[1]);
  napi_status st = napi_make_callback(env, w->ctx, recv, cb, 2, argv, NULL);
  if (st == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_delete_reference(env, w->cb);
  napi_async_destroy(env, w->ctx);
  napi_close_handle_scope(env, scope);
  uv_close((uv_handle_t *)&w->poll, on_closed);
}

/* What the child needs, all of it made before vfork: the child allocates nothing. */
typedef struct {
  char *const *paths; /* the candidates to execve, in order (path_candidates) */
  char *const *argv;
  char **sh_argv; /* /bin/sh <path> <args...>: for ENOEXEC, as execvp does (the child sets [1]) */
  char *const *env;
  const char *cwd;
  int out_w, err_w;
  int set_ids;
  uid_t uid;
  gid_t gid;
  const char *cgroup_procs; /* NULL: stay in the slave's cgroup */
  volatile int err; /* set by the child when it fails before or at the exec (shared: vfork) */
  volatile int in_cgroup_step; /* set with err when joining the cgroup failed */
} child_plan_t;

/* `from` as descriptor `to` without close-on-exec (dup3 refuses from == to: clear the flag then). */
static int move_fd(int from, int to) {
  if (from == to) return (int)syscall(SYS_fcntl, to, F_SETFD, 0);
  return (int)syscall(SYS_dup3, from, to, 0);
}

/*
 * The child side of vfork: it shares the slave's memory and runs on the calling thread's stack,
 * so it uses raw system calls only (no errno-setting libc state, no locks, no allocation) and
 * ends in execve or _exit. Every signal is blocked in the parent around vfork, so no handler of
 * the slave can run here before the dispositions are reset.
 */
static void child_run(child_plan_t *p) {
  /* A zeroed kernel struct sigaction is SIG_DFL with no flags and an empty mask, on every
     architecture's layout. Reset all signals, glibc's internal ones (32, 33) and ignored ones
     (Node ignores SIGPIPE) included: a handler is reset by exec anyway, an ignore is not. */
  unsigned long dfl[8] = {0};
  for (int sig = 1; sig < 65; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    syscall(SYS_rt_sigaction, sig, dfl, NULL, 8);
  }
  /* Into the attempt's cgroup before anything else can fork, and while still the slave's user. */
  if (p->cgroup_procs != NULL) {
    int cg = (int)syscall(SYS_openat, AT_FDCWD, p->cgroup_procs, O_WRONLY | O_CLOEXEC, 0);
    if (cg < 0 || syscall(SYS_write, cg, "0", 1) != 1) {
      p->in_cgroup_step = 1;
      goto fail;
    }
    syscall(SYS_close, cg);
  }
  if (syscall(SYS_setsid) < 0) goto fail;
  int devnull = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY | O_CLOEXEC, 0);
  if (devnull < 0) goto fail;
  if (move_fd(devnull, 0) < 0) goto fail;
  if (move_fd(p->out_w, 1) < 0) goto fail;
  if (move_fd(p->err_w, 2) < 0) goto fail;
  /* Nothing of the slave's but 0, 1 and 2, also descriptors it inherited without close-on-exec. */
  syscall(SYS_close_range, 3, ~0U, 0);
  /* The directory first, then the ids: the order child_process (libuv) uses. */
  if (syscall(SYS_chdir, p->cwd) < 0) goto fail;
  if (p->set_ids) {
    /* Supplementary groups dropped (fails only when not root: then uid/gid fail too, below). */
    syscall(SYS_setgroups, 0, NULL);
    if (syscall(SYS_setresgid, p->gid, p->gid, p->gid) < 0) goto fail;
    if (syscall(SYS_setresuid, p->uid, p->uid, p->uid) < 0) goto fail;
  }
  unsigned long none[2] = {0, 0};
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, none, NULL, 8);
  /* execvp's walk, as the job's user in the job's cwd: EACCES remembered and the search goes on;
     a missing or unreachable candidate is skipped; any other error ends it. */
  int seen_eacces = 0, e = ENOENT;
  for (char *const *c = p->paths; *c != NULL; c++) {
    syscall(SYS_execve, *c, p->argv, p->env);
    e = errno;
    if (e == ENOEXEC) {
      p->sh_argv[1] = *c; /* shared memory, as p->err: the parent reads neither until we are gone */
      syscall(SYS_execve, "/bin/sh", p->sh_argv, p->env);
      goto fail;
    }
    if (e == EACCES) seen_eacces = 1;
    else if (e != ENOENT && e != ENOTDIR && e != ESTALE && e != ENODEV && e != ETIMEDOUT) break;
  }
  p->err = seen_eacces ? EACCES : e != 0 ? e : EINVAL;
  syscall(SYS_exit, 127);
fail:
  p->err = errno != 0 ? errno : EINVAL;
  syscall(SYS_exit, 127);
}

/* Starts the plan's process; 0 and *pid, or an errno (the child, if any, reaped). */
static int do_spawn(child_plan_t *p, pid_t *pid) {
  sigset_t all, old;
  sigfillset(&all);
  p->err = 0;
  p->in_cgroup_step = 0;
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t c = vfork();
  if (c == 0) child_run(p); /* never returns */
  int verr = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (c < 0) return verr;
  if (p->err != 0) {
    while (waitpid(c, NULL, 0) < 0 && errno == EINTR) {
    }
    return p->err;
  }
  *pid = c;
  return 0;
}

static napi_value js_spawn(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value args[8];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  if (argc < 7) return throw_type(env, "spawn(file, argv, env, cwd, uid, gid, onExit): 7 arguments expected");
  napi_valuetype t;
  napi_typeof(env, args[6], &t);
  if (t != napi_function) return throw_type(env, "spawn: onExit must be a function");
  /* uid and gid: both -1 (keep the slave's), or both ids from 0 to 2^31-1. Read as doubles:
     napi_get_value_int64 turns NaN and +-Infinity into 0 (root) and truncates 1.5 to 1. */
  int64_t uid = -1, gid = -1;
  if (!get_id(env, args[4], &uid) || !get_id(env, args[5], &gid) || (uid == -1) != (gid == -1)) {
    return throw_type(env, "spawn: uid and gid must both be -1 or both be integers from 0 to 2147483647");
  }
  int set_ids = uid >= 0;

  napi_value result = NULL;
  char *file = NULL, *cwd = NULL, *cgroup_procs = NULL;
  char **argv = NULL, **envp = NULL, **paths = NULL;
  int out[2] = {-1, -1}, err[2] = {-1, -1};
  file = get_string(env, args[0], "spawn: file must be a string without NUL");
  if (file == NULL) goto done;
  argv = get_vec(env, args[1], "spawn: argv must be an array of strings without NUL");
  if (argv == NULL) goto done;
  envp = get_vec(env, args[2], "spawn: env must be an array of strings without NUL");
  if (envp == NULL) goto done;
  cwd = get_string(env, args[3], "spawn: cwd must be a string without NUL");
  if (cwd == NULL) goto done;
  if (argv[0] == NULL) {
    throw_type(env, "spawn: argv must hold at least argv[0]");
    goto done;
  }
  if (argc >= 8) {
    napi_valuetype ct;
    napi_typeof(env, args[7], &ct);
    if (ct != napi_undefined) {
      cgroup_procs = get_string(env, args[7], "spawn: cgroupProcs must be a string without NUL");
      if (cgroup_procs == NULL) goto done;
    }
  }
  size_t argc_n = 0;
  while (argv[argc_n] != NULL) argc_n++;

  int e = 0;
  paths = path_candidates(file, envp, &e);
  if (paths == NULL) {
    throw_errno(env, e, file);
    goto done;
  }
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    throw_errno(env, errno, file);
    goto done;
  }
  /* /bin/sh <path> <args...> for a file without #! (ENOEXEC), made here: the child allocates
     nothing (it sets [1] to the candidate that gave ENOEXEC). Borrows argv's strings. */
  char **sh_argv = calloc(argc_n + 2, sizeof(char *));
  if (sh_argv == NULL) {
    throw_errno(env, ENOMEM, file);
    goto done;
  }
  sh_argv[0] = (char *)"/bin/sh";
  sh_argv[1] = paths[0];
  for (size_t i = 1; i < argc_n; i++) sh_argv[i + 1] = argv[i];
  child_plan_t plan = {.paths = paths, .argv = argv, .sh_argv = sh_argv, .env = envp, .cwd = cwd, .out_w = out[1], .err_w = err[1], .set_ids = set_ids, .uid = (uid_t)uid, .gid = (gid_t)gid, .cgroup_procs = cgroup_procs};
  pid_t pid = 0;
  int r = do_spawn(&plan, &pid);
  free(sh_argv);
  if (r != 0) {
    if (plan.in_cgroup_step) throw_errno_in(env, r, "cgroup", cgroup_procs);
    else throw_errno(env, r, file);
    goto done;
  }
  close(out[1]);
  close(err[1]);
  out[1] = err[1] = -1;

  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  watch_t *w = pidfd < 0 ? NULL : calloc(1, sizeof(watch_t));
  uv_loop_t *loop = NULL;
  int perr = pidfd < 0 ? errno : 0;
  if (w != NULL && napi_get_uv_event_loop(env, &loop) == napi_ok) {
    int ur = uv_poll_init(loop, &w->poll, pidfd);
    if (ur == 0) {
      w->poll.data = w;
      w->pidfd = pidfd;
      w->pid = pid;
      w->env = env;
      napi_value name, resource;
      napi_create_string_utf8(env, "builder.spawn", NAPI_AUTO_LENGTH, &name);
      napi_create_object(env, &resource);
      napi_async_init(env, resource, name, &w->ctx);
      napi_create_reference(env, args[6], 1, &w->cb);
      uv_poll_start(&w->poll, UV_READABLE, on_exit_ready);
      napi_value a[3];
      napi_create_array_with_length(env, 3, &result);
      napi_create_int32(env, pid, &a[0]);
      napi_create_int32(env, out[0], &a[1]);
      napi_create_int32(env, err[0], &a[2]);
      for (uint32_t i = 0; i < 3; i++) napi_set_element(env, result, i, a[i]);
      out[0] = err[0] = -1; /* now the caller's */
      goto done;
    }
    perr = -ur;
  }
  /* The exit cannot be watched: the process must not run unobserved. */
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
  if (pidfd >= 0) close(pidfd);
  free(w);
  throw_errno(env, perr == 0 ? ENOMEM : perr, file);

done:
  for (int i = 0; i < 2; i++) {
    if (out[i] >= 0) close(out[i]);
    if (err[i] >= 0) close(err[i]);
  }
  free(file);
  free(cwd);
  free(cgroup_procs);
  free_vec(paths);
  free_vec(argv);
  free_vec(envp);
  return result;
}

/*
 * probe() -> undefined, or why this kernel cannot run the spawner: pidfd_open (5.3), waitid on a
 * pidfd (5.4) and close_range (5.9) must all work, or the slave uses child_process.
 */
static napi_value js_probe(napi_env env, napi_callback_info info) {
  (void)info;
  const char *why = NULL;
  int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (fd < 0) {
    why = "pidfd_open is not available (Linux 5.3 or later needed)";
  } else {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    /* Our own pid is not our child: ECHILD means the call is understood, EINVAL that P_PIDFD is not. */
    if (waitid((idtype_t)P_PIDFD, (id_t)fd, &si, WEXITED | WNOHANG) != 0 && errno != ECHILD) why = "waitid cannot wait on a pidfd (Linux 5.4 or later needed)";
    close(fd);
  }
  if (why == NULL && syscall(SYS_close_range, ~0U - 1, ~0U, 0) != 0 && errno == ENOSYS) why = "close_range is not available (Linux 5.9 or later needed)";
  napi_value r;
  if (why == NULL) napi_get_undefined(env, &r);
  else napi_create_string_utf8(env, why, NAPI_AUTO_LENGTH, &r);
  return r;
}

/*
 * lock(fd) -> 0, or the errno of flock(fd, LOCK_EX | LOCK_NB) (EWOULDBLOCK: another open file
 * description holds it). The slave locks DIR/slave.lock for its lifetime with it: the kernel
 * drops the lock when the process dies, however it dies.
 */
static napi_value js_lock(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value arg, r;
  napi_get_cb_info(env, info, &argc, &arg, NULL, NULL);
  int32_t fd = -1;
  if (argc < 1 || napi_get_value_int32(env, arg, &fd) != napi_ok || fd < 0) return throw_type(env, "lock: fd must be a descriptor number");
  int e = 0;
  while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    e = errno;
    break;
  }
  napi_create_int32(env, e, &r);
  return r;
}

NAPI_MODULE_INIT() {
  /* Binds now the only two functions the vfork child calls, syscall() and __errno_location()
     (errno): the addon is loaded lazily (RTLD_LAZY), and the first call through a PLT entry runs
     the dynamic linker's resolver, which must not run in the child (it writes the GOT and the
     calling thread's scope flag, on the slave's memory). Not `-z now`: binding every symbol at
     load touches about 0.8 MB of node's symbol tables, in each slave's RSS. The LD_DEBUG test in
     spawners.test.ts fails if the child ever binds anything. */
  (void)syscall(SYS_getpid);
  volatile int bound_errno = errno;
  (void)bound_errno;
  napi_value fn;
  napi_create_function(env, "spawn", NAPI_AUTO_LENGTH, js_spawn, NULL, &fn);
  napi_set_named_property(env, exports, "spawn", fn);
  napi_create_function(env, "probe", NAPI_AUTO_LENGTH, js_probe, NULL, &fn);
  napi_set_named_property(env, exports, "probe", fn);
  napi_create_function(env, "lock", NAPI_AUTO_LENGTH, js_lock, NULL, &fn);
  napi_set_named_property(env, exports, "lock", fn);
  return exports;
}
