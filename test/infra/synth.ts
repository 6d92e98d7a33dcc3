import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { App, type Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type { CloudAssembly } from 'aws-cdk-lib/cx-api';
import { infraDefaults, validateInfraConfig, type InfraConfig } from '../../lib/infra/config.ts';
import { buildCluster, type ClusterStacks } from '../../lib/infra/stacks.ts';

export interface SynthesizedCluster {
  config: InfraConfig;
  app: App;
  stacks: ClusterStacks;
  assembly: CloudAssembly;
  /** Every stack's template, by stack name. */
  templates: Map<string, Template>;
  /** Construction plus synthesis (esbuild bundling included), in ms. */
  synthMs: number;
}

/**
 * The whole app, built and synthesized in-process into a temporary directory (bundling with
 * esbuild, as `cdk synth` does, unless `bundle: false` for tests that read no function code).
 * A test file calls this once and shares the result.
 */
export function synthesizeCluster(overrides: Partial<InfraConfig> = {}, options: { bundle?: boolean } = {}): SynthesizedCluster {
  const config = validateInfraConfig({ ...infraDefaults, account: undefined, ...overrides });
  const startedMs = performance.now();
  const app = new App({
    outdir: mkdtempSync(path.join(tmpdir(), 'epochkv-synth-')),
    // The CLI's own switch (`--exclusively` sets it): an empty list bundles no stack's assets.
    ...(options.bundle === false ? { context: { 'aws:cdk:bundling-stacks': [] } } : {}),
  });
  const stacks = buildCluster(app, config);
  const assembly = app.synth();
  const synthMs = performance.now() - startedMs;
  const templates = new Map<string, Template>(stacks.all.map((stack: Stack) => [stack.stackName, Template.fromStack(stack)]));
  return { config, app, stacks, assembly, templates, synthMs };
}

/** Resources of one type in a template, by logical ID. */
export function resourcesOf(template: Template, type: string): Record<string, { Properties?: Record<string, unknown>; [key: string]: unknown }> {
  return template.findResources(type) as Record<string, { Properties?: Record<string, unknown> }>;
}
