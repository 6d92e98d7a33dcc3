import { describe, expect, it } from 'vitest';
import { countWithinBytes } from '../../lib/core/page.ts';

describe('Function: countWithinBytes', () => {
  it('takes items in order while their bytes fit, and always at least one', () => {
    expect(countWithinBytes([], 10)).toBe(0);
    expect(countWithinBytes([4, 4, 4], 10)).toBe(2);
    expect(countWithinBytes([4, 6, 1], 10)).toBe(2);
    expect(countWithinBytes([3, 3, 3], 10)).toBe(3);
    // One item over the cap still moves the page on.
    expect(countWithinBytes([50, 1], 10)).toBe(1);
  });
});
