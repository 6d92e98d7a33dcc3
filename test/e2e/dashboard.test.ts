import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startLocalCloud, type LocalCloud } from '../../lib/local/cloud.ts';
import { uniquePrefix, waitUntil } from '../support.ts';

const chromiumPath = process.env.EPOCHKV_CHROMIUM ?? '/usr/bin/chromium';
const haveChromium = existsSync(chromiumPath);
if (!haveChromium) {
  console.log(`dashboard browser test skipped: no Chromium at ${chromiumPath} (install Debian's chromium, as .ci/run does, or set EPOCHKV_CHROMIUM)`);
}

let cloud: LocalCloud;

describe.skipIf(!haveChromium)('Dashboard (headless Chromium driven by playwright-core)', () => {
  beforeAll(async () => {
    cloud = await startLocalCloud({
      basePort: 0,
      dynamoEndpoint: inject('dynamoEndpoint'),
      sqsEndpoint: inject('sqsEndpoint'),
      tablePrefix: uniquePrefix('dashboard'),
      log: () => undefined,
    });
  });

  afterAll(async () => {
    await cloud?.stop();
  });

  it('shows the cluster, kills the leader of a shard with a button, and shows a new leader with a higher epoch', async () => {
    // Prepare
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: chromiumPath,
      // Root in a container needs --no-sandbox; the rest keeps Chromium off the closed network.
      args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      await page.goto(cloud.apiUrl);
      const leaderCell = page.locator('#shards tr[data-shard="0"] [data-field="leader"]');
      const epochCell = page.locator('#shards tr[data-shard="0"] [data-field="epoch"]');
      await waitUntil('the dashboard to show a leader of shard 0', async () => ((await leaderCell.textContent())?.startsWith('node-') ? true : undefined), 30_000, 100);
      // Some traffic, so the chart and the log have something to show.
      for (let index = 0; index < 30; index += 1) await fetch(`${cloud.apiUrl}/kv/demo-${index % 7}`, { method: 'PUT', body: `value ${index}` });
      const leader = (await leaderCell.textContent()) as string;
      const epoch = Number(await epochCell.textContent());

      // Act
      await page.locator(`button[data-action="kill"][data-node="${leader}"]`).click();
      const after = await waitUntil(
        'a new leader of shard 0 with a higher epoch on the page',
        async () => {
          const now = await leaderCell.textContent();
          const nowEpoch = Number(await epochCell.textContent());
          return now !== null && now !== leader && now.startsWith('node-') && nowEpoch > epoch ? { leader: now, epoch: nowEpoch } : undefined;
        },
        15_000,
        100,
      );
      for (let index = 0; index < 20; index += 1) await fetch(`${cloud.apiUrl}/kv/demo-${index % 7}`);
      await page.waitForTimeout(1_200);
      const directory = path.join('test', 'artifacts');
      mkdirSync(directory, { recursive: true });
      const screenshot = path.join(directory, 'dashboard.png');
      await page.screenshot({ path: screenshot, fullPage: true });

      // Assess
      console.log(`dashboard: shard 0 moved from ${leader}@${epoch} to ${after.leader}@${after.epoch} after the Kill button; screenshot ${screenshot}`);
      expect(after.epoch).toBeGreaterThan(epoch);
      expect(await page.locator(`.node[data-node="${leader}"] [data-field="state"]`).textContent()).toBe('killed');
      expect(await page.locator('#nodes .node').count()).toBe(3);
      expect(await page.locator('#log div').count()).toBeGreaterThan(0);
      expect(existsSync(screenshot)).toBe(true);
    } finally {
      await browser.close();
    }
  });
});
