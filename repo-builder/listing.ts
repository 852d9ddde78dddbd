import { z } from 'zod';
import { BuilderError } from '../protocol/errors.js';
import { checkName, checkRelativePath, isValidName } from '../protocol/names.js';

/** Suffix of a listing file: `<incoming>/<batch-id>.listing.json`. */
export const LISTING_SUFFIX = '.listing.json';

/** What a listing file holds (docs/repo-builder.md, "The incoming contract"). */
export const ListingSchema = z
  .object({
    version: z.literal(1),
    batch: z.string(),
    job: z.string().min(1).max(128),
    channel: z.string(),
    files: z
      .array(
        z
          .object({
            name: z.string(),
            size: z.number().int().nonnegative(),
            sha256: z.string().regex(/^[0-9a-f]{64}$/, 'sha256 must be 64 lowercase hex digits'),
          })
          .strict(),
      )
      .min(1),
  })
  .strict();

export type Listing = z.infer<typeof ListingSchema>;

/** The kinds of file a batch may carry, told apart by name. */
export type FileKind = 'deb' | 'rpm' | 'srpm' | 'dsc' | 'debsrc';

/** The kind of a listed file, or undefined when the name is not a package or source file. */
export function fileKind(name: string): FileKind | undefined {
  if (name.endsWith('.src.rpm')) return 'srpm';
  if (name.endsWith('.rpm')) return 'rpm';
  if (name.endsWith('.deb')) return 'deb';
  if (name.endsWith('.dsc')) return 'dsc';
  if (/\.(tar|tar\.(gz|xz|bz2|zst|lzma)|diff\.gz)$/.test(name)) return 'debsrc';
  return undefined;
}

/** A batch id taken from a listing's file name, or undefined when the name is not a listing. */
export function batchIdOf(fileName: string): string | undefined {
  if (!fileName.endsWith(LISTING_SUFFIX)) return undefined;
  return fileName.slice(0, -LISTING_SUFFIX.length);
}

/**
 * Parses and validates a listing's text for batch `batchId`. Every file name must be a single
 * path segment (no directories, no `..`), known by its extension, and listed once.
 */
export function parseListing(text: string, batchId: string, maxFiles: number): Listing {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `listing is not valid JSON: ${(e as Error).message}`);
  }
  const r = ListingSchema.safeParse(json);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `listing does not match the schema: ${first ? `${first.path.join('.')}: ${first.message}` : 'invalid'}`);
  }
  const listing = r.data;
  if (listing.batch !== batchId) {
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `listing names batch ${JSON.stringify(listing.batch).slice(0, 80)} but its file is ${batchId}${LISTING_SUFFIX}`);
  }
  checkName('channel', listing.channel);
  if (listing.files.length > maxFiles) {
    throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `listing has ${listing.files.length} files (limit ${maxFiles})`);
  }
  const seen = new Set<string>();
  for (const f of listing.files) {
    // Security: a listed name is joined to the batch directory; it must stay inside it.
    checkRelativePath(f.name);
    if (f.name.includes('/')) throw new BuilderError('BUILDER_ERR_INVALID_NAME', `listed file ${JSON.stringify(f.name).slice(0, 120)} is not directly in the batch directory`);
    if (f.name.startsWith('.')) throw new BuilderError('BUILDER_ERR_INVALID_NAME', `listed file ${JSON.stringify(f.name).slice(0, 120)} is hidden`);
    if (fileKind(f.name) === undefined) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `listed file ${JSON.stringify(f.name).slice(0, 120)} is not a package (.deb, .rpm, .src.rpm, .dsc, source tarball)`);
    if (seen.has(f.name)) throw new BuilderError('BUILDER_ERR_INVALID_INPUT', `file ${f.name} is listed twice`);
    seen.add(f.name);
  }
  return listing;
}

/** True when `id` can name a batch (and so a directory under incoming/ and incoming/rejected/). */
export function isValidBatchId(id: string): boolean {
  return isValidName(id) && id !== 'rejected';
}
