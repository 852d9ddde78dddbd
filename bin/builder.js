#!/usr/bin/env node
// Before anything else loads: see dist/cli/optimizer.js. The command lets it go once it is up.
import { holdOptimizer } from '../dist/cli/optimizer.js';

holdOptimizer();
const { runBin } = await import('../dist/cli/run.js');
await runBin('builder');
