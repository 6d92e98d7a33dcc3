#!/usr/bin/env node
// The `epochkv` command: registers the TypeScript loader, then runs the CLI.
import { register } from 'tsx/esm/api';

register();
await import('./epochkv-cli.ts');
