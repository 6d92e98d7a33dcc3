import { describe, expect, it } from 'vitest';
import { escapeXml, logTicks, renderChart, type ChartData } from '../../lib/bench/svg.ts';
import { markdownTable, textTable } from '../../lib/bench/report.ts';

/**
 * A strict little XML check, enough for generated SVG: one root, every tag closed in order,
 * every attribute quoted, entities only from the predefined five, no NaN or undefined.
 */
function checkWellFormed(xml: string): void {
  const stack: string[] = [];
  let roots = 0;
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<!--[\s\S]*?-->/g;
  let last = 0;
  for (let match = tag.exec(xml); match !== null; match = tag.exec(xml)) {
    const between = xml.slice(last, match.index);
    expect(between, `stray markup before offset ${match.index}`).not.toMatch(/[<>]/);
    expect(between.replace(/&(amp|lt|gt|quot|apos);/g, ''), 'a bare ampersand').not.toContain('&');
    last = match.index + match[0].length;
    if (match[0].startsWith('<!--')) continue;
    const [, closing, name, , selfClosing] = match;
    if (closing === '/') {
      expect(stack.pop(), `</${name}> closes the wrong element`).toBe(name);
    } else if (selfClosing !== '/') {
      if (stack.length === 0) roots += 1;
      stack.push(name as string);
    } else if (stack.length === 0) roots += 1;
  }
  expect(xml.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
  expect(roots).toBe(1);
  expect(xml).not.toMatch(/NaN|undefined|Infinity/);
}

const data: ChartData = {
  title: 'epochkv <bench> & "friends"',
  subtitle: "2 CPUs, it's fine",
  latency: {
    title: 'Write latency',
    series: [
      { label: 'c1', points: [[1.2, 0.1], [3, 0.5], [40, 1]] },
      { label: 'c32', points: [[10, 0.2], [250, 0.99], [1200, 1]] },
    ],
  },
  lag: { title: 'Lag', series: [{ label: 'eu-west-1', points: [[20, 0.5], [400, 1]] }], marker: { x: 250, label: '250 ms target' } },
  throughput: {
    title: 'Throughput',
    unit: 'ops/s',
    groups: [
      { label: 'c1', bars: [{ name: 'limit', value: 40 }, { name: 'epochkv', value: 30 }, { name: 'etcd', value: 900 }] },
      { label: 'c32', bars: [{ name: 'limit', value: 120 }, { name: 'epochkv', value: 100 }] },
    ],
  },
};

describe('renderChart', () => {
  it('produces well-formed, self-contained SVG', () => {
    const svg = renderChart(data);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    checkWellFormed(svg);
    expect(svg).not.toMatch(/<script|href=/);
    expect(svg).toContain('epochkv &lt;bench&gt; &amp; &quot;friends&quot;');
    expect(svg).toContain('250 ms target');
  });

  it('draws one path per series and one bar per value', () => {
    const svg = renderChart(data);
    expect(svg.match(/<path /g)).toHaveLength(3);
    expect(svg.match(/<rect x="[^"]+" y="[^"]+" width="[^"]+" height="[^"]+" fill="[^"]+"><title>/g)).toHaveLength(5);
  });

  it('puts bars an order of magnitude apart on a log scale', () => {
    const svg = renderChart(data);
    expect(svg).toContain('ops/s (log scale)');
    const linear = renderChart({ ...data, throughput: { ...data.throughput, groups: [{ label: 'c1', bars: [{ name: 'limit', value: 40 }, { name: 'epochkv', value: 30 }] }] } });
    checkWellFormed(linear);
    expect(linear).not.toContain('ops/s (log scale)');
  });

  it('stays well-formed with no data and skips points it cannot place', () => {
    const empty: ChartData = { ...data, latency: { title: 'none', series: [] }, lag: { title: 'none', series: [{ label: 'x', points: [[0, 0.5], [Number.NaN, 1]] }] }, throughput: { title: 'none', unit: 'ops/s', groups: [] } };
    const svg = renderChart(empty);
    checkWellFormed(svg);
    expect(svg).toContain('no data');
  });
});

describe('chart helpers and tables', () => {
  it('escapes the five XML specials', () => {
    expect(escapeXml(`<a href="x">&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;');
  });

  it('puts 1-2-5 ticks on a log axis', () => {
    expect(logTicks(1, 100)).toEqual([1, 2, 5, 10, 20, 50, 100]);
    expect(logTicks(0.1, 1)).toEqual([0.1, 0.2, 0.5, 1]);
  });

  it('aligns text tables and escapes Markdown pipes', () => {
    expect(textTable(['a', 'bb'], [['xyz', '1']])).toEqual(['a    bb', '---  --', 'xyz   1']);
    expect(markdownTable(['k', 'v'], [['a|b', '2']])).toEqual(['| k | v |', '| --- | ---: |', '| a\\|b | 2 |']);
  });
});
