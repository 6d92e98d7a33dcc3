/**
 * The benchmark's chart as a standalone SVG (no scripts, no external references): write
 * latency CDFs, replication lag CDFs and throughput against the storage limit. Pure string
 * building; every number is checked finite before it is written.
 */

export interface Series {
  label: string;
  /** `[x, fraction]` CDF points, x in ms (> 0 for the log scale). */
  points: readonly (readonly [number, number])[];
}

export interface BarGroup {
  label: string;
  bars: { name: string; value: number }[];
}

export interface ChartData {
  title: string;
  subtitle: string;
  latency: { title: string; series: Series[] };
  lag: { title: string; series: Series[]; marker?: { x: number; label: string } };
  throughput: { title: string; groups: BarGroup[]; unit: string };
}

const palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
const barColors: Record<string, string> = { limit: '#7f7f7f', epochkv: '#1f77b4', etcd: '#2ca02c' };

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

function num(value: number): string {
  if (!Number.isFinite(value)) throw new RangeError(`a chart coordinate must be finite, got ${value}`);
  return String(Math.round(value * 10) / 10);
}

function text(x: number, y: number, content: string, attributes = ''): string {
  return `<text x="${num(x)}" y="${num(y)}"${attributes === '' ? '' : ` ${attributes}`}>${escapeXml(content)}</text>`;
}

/** Ticks of a log axis: 1, 2, 5 × powers of ten within [min, max]. */
export function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let exponent = Math.floor(Math.log10(min)) - 1; exponent <= Math.ceil(Math.log10(max)); exponent += 1) {
    for (const mantissa of [1, 2, 5]) {
      const value = mantissa * 10 ** exponent;
      if (value >= min * 0.999 && value <= max * 1.001) ticks.push(Number(value.toPrecision(3)));
    }
  }
  return ticks;
}

function formatMs(value: number): string {
  if (value >= 1000) return `${value / 1000} s`;
  return `${value}`;
}

interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

function cdfPanel(box: Box, title: string, series: Series[], marker?: { x: number; label: string }): string {
  const parts: string[] = [];
  parts.push(text(box.x, box.y - 12, title, 'class="panel-title"'));
  const xs = series.flatMap((entry) => entry.points.map(([x]) => x)).filter((x) => Number.isFinite(x) && x > 0);
  if (marker !== undefined && marker.x > 0) xs.push(marker.x);
  parts.push(`<rect x="${num(box.x)}" y="${num(box.y)}" width="${num(box.width)}" height="${num(box.height)}" class="frame"/>`);
  if (xs.length === 0) {
    parts.push(text(box.x + box.width / 2, box.y + box.height / 2, 'no data', 'text-anchor="middle" class="muted"'));
    return parts.join('\n');
  }
  const min = Math.max(0.1, 10 ** Math.floor(Math.log10(Math.min(...xs))));
  const max = 10 ** Math.ceil(Math.log10(Math.max(...xs) * 1.0001));
  const sx = (x: number) => box.x + ((Math.log10(Math.max(x, min)) - Math.log10(min)) / (Math.log10(max) - Math.log10(min))) * box.width;
  const sy = (fraction: number) => box.y + box.height - fraction * box.height;
  for (const tick of logTicks(min, max)) {
    const x = sx(tick);
    parts.push(`<line x1="${num(x)}" y1="${num(box.y)}" x2="${num(x)}" y2="${num(box.y + box.height)}" class="grid"/>`);
    parts.push(text(x, box.y + box.height + 16, formatMs(tick), 'text-anchor="middle" class="tick"'));
  }
  for (const fraction of [0, 0.25, 0.5, 0.75, 0.9, 0.99, 1]) {
    const y = sy(fraction);
    parts.push(`<line x1="${num(box.x)}" y1="${num(y)}" x2="${num(box.x + box.width)}" y2="${num(y)}" class="grid"/>`);
    // 99% sits too close to 100% for a label on the axis: it is labelled inside the plot.
    if (fraction === 0.99) parts.push(text(box.x + 4, y + 11, '99%', 'class="tick"'));
    else parts.push(text(box.x - 6, y + 4, `${Math.round(fraction * 100)}%`, 'text-anchor="end" class="tick"'));
  }
  parts.push(text(box.x + box.width / 2, box.y + box.height + 34, 'milliseconds (log scale)', 'text-anchor="middle" class="axis"'));
  if (marker !== undefined && marker.x > 0) {
    const x = sx(marker.x);
    parts.push(`<line x1="${num(x)}" y1="${num(box.y)}" x2="${num(x)}" y2="${num(box.y + box.height)}" class="marker"/>`);
    parts.push(text(x + 4, box.y + 14, marker.label, 'class="tick"'));
  }
  series.forEach((entry, position) => {
    const color = palette[position % palette.length] as string;
    const points = entry.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && x > 0);
    if (points.length > 0) {
      // A step function: each value holds its fraction until the next one.
      let path = `M${num(sx(points[0]![0]))},${num(sy(0))}`;
      let previousY = 0;
      for (const [x, y] of points) {
        path += ` L${num(sx(x))},${num(sy(previousY))} L${num(sx(x))},${num(sy(y))}`;
        previousY = y;
      }
      parts.push(`<path d="${path}" fill="none" stroke="${color}" stroke-width="1.8"/>`);
    }
    const legendY = box.y + box.height - 12 - (series.length - 1 - position) * 16;
    parts.push(`<line x1="${num(box.x + box.width - 150)}" y1="${num(legendY - 4)}" x2="${num(box.x + box.width - 132)}" y2="${num(legendY - 4)}" stroke="${color}" stroke-width="3"/>`);
    parts.push(text(box.x + box.width - 128, legendY, entry.label, 'class="legend"'));
  });
  return parts.join('\n');
}

function barPanel(box: Box, title: string, groups: BarGroup[], unit: string): string {
  const parts: string[] = [];
  parts.push(text(box.x, box.y - 12, title, 'class="panel-title"'));
  parts.push(`<rect x="${num(box.x)}" y="${num(box.y)}" width="${num(box.width)}" height="${num(box.height)}" class="frame"/>`);
  const values = groups.flatMap((group) => group.bars.map((bar) => bar.value)).filter((value) => Number.isFinite(value) && value >= 0);
  if (values.length === 0) {
    parts.push(text(box.x + box.width / 2, box.y + box.height / 2, 'no data', 'text-anchor="middle" class="muted"'));
    return parts.join('\n');
  }
  const positive = values.filter((value) => value > 0);
  // Values an order of magnitude or more apart (etcd next to DynamoDB Local) go on a log scale.
  const logScale = positive.length > 0 && Math.max(...positive) / Math.min(...positive) > 20;
  let sy: (value: number) => number;
  let ticks: number[];
  if (logScale) {
    const low = 10 ** Math.floor(Math.log10(Math.min(...positive)));
    const high = 10 ** Math.ceil(Math.log10(Math.max(...positive) * 1.0001));
    sy = (value: number) => box.y + box.height - ((Math.log10(Math.max(value, low)) - Math.log10(low)) / (Math.log10(high) - Math.log10(low))) * box.height;
    ticks = logTicks(low, high);
  } else {
    const top = niceCeiling(Math.max(...values, 1));
    sy = (value: number) => box.y + box.height - (value / top) * box.height;
    ticks = [0, 1, 2, 3, 4].map((step) => (top * step) / 4);
  }
  for (const value of ticks) {
    parts.push(`<line x1="${num(box.x)}" y1="${num(sy(value))}" x2="${num(box.x + box.width)}" y2="${num(sy(value))}" class="grid"/>`);
    parts.push(text(box.x - 6, sy(value) + 4, String(value >= 1 ? Math.round(value) : value), 'text-anchor="end" class="tick"'));
  }
  const axisLabel = logScale ? `${unit} (log scale)` : unit;
  parts.push(text(box.x - 44, box.y + box.height / 2, axisLabel, `class="axis" transform="rotate(-90 ${num(box.x - 44)} ${num(box.y + box.height / 2)})" text-anchor="middle"`));
  const groupWidth = box.width / Math.max(1, groups.length);
  const names = [...new Set(groups.flatMap((group) => group.bars.map((bar) => bar.name)))];
  groups.forEach((group, groupIndex) => {
    const barWidth = Math.min(36, (groupWidth * 0.8) / Math.max(1, group.bars.length));
    const start = box.x + groupIndex * groupWidth + (groupWidth - barWidth * group.bars.length) / 2;
    group.bars.forEach((bar, barIndex) => {
      if (!Number.isFinite(bar.value) || bar.value < 0) return;
      const x = start + barIndex * barWidth;
      const color = barColors[bar.name] ?? (palette[names.indexOf(bar.name) % palette.length] as string);
      parts.push(`<rect x="${num(x)}" y="${num(sy(bar.value))}" width="${num(barWidth - 3)}" height="${num(box.y + box.height - sy(bar.value))}" fill="${color}"><title>${escapeXml(`${group.label} ${bar.name}: ${Math.round(bar.value)} ${unit}`)}</title></rect>`);
      parts.push(text(x + (barWidth - 3) / 2, sy(bar.value) - 3, String(Math.round(bar.value)), 'text-anchor="middle" class="value"'));
    });
    parts.push(text(box.x + groupIndex * groupWidth + groupWidth / 2, box.y + box.height + 16, group.label, 'text-anchor="middle" class="tick"'));
  });
  // The legend sits on the title's line, right-aligned, clear of the bars.
  names.forEach((name, position) => {
    const color = barColors[name] ?? (palette[position % palette.length] as string);
    const x = box.x + box.width - (names.length - position) * 90;
    const y = box.y - 12;
    parts.push(`<rect x="${num(x)}" y="${num(y - 9)}" width="12" height="10" fill="${color}"/>`);
    parts.push(text(x + 16, y, name, 'class="legend"'));
  });
  return parts.join('\n');
}

function niceCeiling(value: number): number {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

export function renderChart(data: ChartData): string {
  const width = 1000;
  const height = 780;
  const body = [
    text(24, 30, data.title, 'class="title"'),
    text(24, 50, data.subtitle, 'class="muted"'),
    cdfPanel({ x: 70, y: 90, width: 400, height: 260 }, data.latency.title, data.latency.series),
    cdfPanel({ x: 570, y: 90, width: 400, height: 260 }, data.lag.title, data.lag.series, data.lag.marker),
    barPanel({ x: 70, y: 450, width: 900, height: 270 }, data.throughput.title, data.throughput.groups, data.throughput.unit),
  ];
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    '<style>',
    '.title { font-size: 18px; font-weight: bold; fill: #222; }',
    '.panel-title { font-size: 14px; font-weight: bold; fill: #222; }',
    '.muted { font-size: 12px; fill: #666; }',
    '.tick { font-size: 11px; fill: #444; }',
    '.axis { font-size: 12px; fill: #444; }',
    '.legend { font-size: 12px; fill: #222; }',
    '.value { font-size: 10px; fill: #222; }',
    '.frame { fill: none; stroke: #999; }',
    '.grid { stroke: #e5e5e5; }',
    '.marker { stroke: #d62728; stroke-dasharray: 4 3; }',
    '</style>',
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
