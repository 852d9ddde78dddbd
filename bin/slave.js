#!/usr/bin/env node
// Before anything else loads: see dist/protocol/v8-optimizer.js. The daemon lets it go once it is busy.
import { holdOptimizer } from '../dist/protocol/v8-optimizer.js';

holdOptimizer();
const { runBin } = await import('../dist/cli/run.js');
await runBin('slave');
