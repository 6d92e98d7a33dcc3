/**
 * The CDK app entry (`cdk synth` / `cdk deploy`). The stacks are not built yet: the
 * deployable app is tracked as its own issue. Until then this says so plainly instead of
 * synthesizing something partial.
 */
console.error('epochkv: the CDK stacks are not part of this version yet; run the local cloud with `npm start` (see README "Status").');
process.exit(1);
