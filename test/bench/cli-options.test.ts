import { describe, expect, it } from 'vitest';
import { numberOption } from '../../lib/cli-options.ts';

describe('numeric command-line options (bench, bench:lag, chaos)', () => {
  it('accepts numbers within bounds', () => {
    expect(numberOption('200', 'rate', { min: 1, max: 2000 })).toBe(200);
    expect(numberOption('2.5', 'rate', { min: 1, max: 2000 })).toBe(2.5);
    expect(numberOption('20', 'rounds', { min: 1, max: 20, integer: true })).toBe(20);
  });

  it('refuses the rest, naming the option, its bounds and what was given', () => {
    expect(() => numberOption('x', 'rate', { min: 1, max: 2000 })).toThrow('--rate must be a number from 1 to 2000, got "x"');
    expect(() => numberOption('', 'seconds', { min: 5, max: 600 })).toThrow('--seconds must be a number from 5 to 600, got ""');
    expect(() => numberOption('2.5', 'rounds', { min: 1, max: 20, integer: true })).toThrow('--rounds must be an integer from 1 to 20, got "2.5"');
    expect(() => numberOption('0', 'lag-rate', { min: 1, max: 5000, what: 'a number of writes per second' })).toThrow('--lag-rate must be a number of writes per second from 1 to 5000, got "0"');
    expect(() => numberOption('Infinity', 'rate', { min: 1, max: Number.POSITIVE_INFINITY })).toThrow(/--rate must be a number/);
  });
});
