/** The repository builder's public face. */
export { RepoBuilder, type RunSummary } from './repo-builder.js';
export { IncomingWatcher } from './incoming-watcher.js';
export { compileRepoBuilderOptions, type RepoBuilderOptions, type RepoBuilderConfig } from './repo-builder-options.js';
export { ListingSchema, parseListing, LISTING_SUFFIX, type Listing } from './listing.js';
export { readDeb, type DebInfo } from './deb-reader.js';
export { readRpm, type RpmInfo } from './rpm-reader.js';
export { compareDebVersions, parseDebVersion, rpmvercmp, compareRpmEvr, parseRpmEvr } from './version.js';
export { DEFAULT_READER_LIMITS, type ReaderLimits } from './limits.js';
