#!/usr/bin/env node
import { runBin } from '../dist/cli/run.js';

await runBin('builder');
