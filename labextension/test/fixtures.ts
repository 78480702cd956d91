/**
 * Protocol v1 messages as the kernel sends them (PROTOCOL.md), for a
 * four-cell notebook: a -> b -> c, and d independent.
 */

import type { CellState } from '../src/protocol';

export function cell(id: string, overrides: Partial<CellState> = {}): CellState {
  return {
    id,
    execution_count: null,
    label: `${id} = 1`,
    state: 'not_run',
    reason: '',
    prediction: 'unknown',
    prediction_reason: '',
    duration: 0,
    saved: 0,
    reads: [],
    writes: [],
    depends_on: [],
    origin: null,
    own: null,
    run_seconds: 0,
    ...overrides
  };
}

export const CELLS = [
  { id: 'a', source: 'import time\nx = 1' },
  { id: 'b', source: 'y = x + 1' },
  { id: 'c', source: '\n\nz = y * 2  # uses y' },
  { id: 'd', source: 'time.sleep(1)' }
];

export function stateMessage(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'state',
    protocol: 1,
    enabled: true,
    cells: [
      cell('a', { execution_count: 1, state: 'restored', saved: 0.2, writes: ['x', 'time'] }),
      cell('b', {
        execution_count: 2,
        state: 'ran',
        reason: 'input `x` changed',
        reads: ['x'],
        writes: ['y'],
        depends_on: [{ id: 'a', names: ['x'] }]
      }),
      cell('c', {
        execution_count: 3,
        state: 'stale',
        reason: 'an upstream cell changed',
        prediction: 'run',
        prediction_reason: 'input `y` changed',
        reads: ['y'],
        depends_on: [{ id: 'b', names: ['y'] }]
      }),
      cell('d', {
        execution_count: 4,
        state: 'uncacheable',
        reason: 'reads a module that cannot be hashed',
        depends_on: [{ id: 'a', names: ['time'] }]
      })
    ],
    totals: {
      restored: 1,
      ran: 1,
      uncacheable: 1,
      error: 0,
      saved: 0.2,
      cache_bytes: 3 * 1024 * 1024,
      cache_cap: 10 * 1024 * 1024 * 1024,
      cache_entries: 2,
      own: 0
    },
    stale: ['c'],
    ...overrides
  };
}
