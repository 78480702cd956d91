import { staleAfterEdit, upstreamOf } from '../src/impact';
import { CacheModel } from '../src/model';
import { CellState, parseKernelMessage } from '../src/protocol';
import { cell, CELLS, stateMessage } from './fixtures';

function modelWith(cells: CellState[]): CacheModel {
  const model = new CacheModel();
  model.setCells(cells.map(c => ({ id: c.id, source: c.label })));
  const parsed = parseKernelMessage(stateMessage({ cells }));
  if (!('message' in parsed)) {
    throw new Error(parsed.ignored);
  }
  model.apply(parsed.message);
  return model;
}

const on = (id: string) => [{ id, names: ['v'] }];

describe('staleAfterEdit: the kernel’s stale rule, for the Cells tab and the graph alike', () => {
  it('marks every executed dependent, whatever its state (nocache, rerun, error, stale)', () => {
    const model = modelWith([
      cell('a', { state: 'ran', execution_count: 1 }),
      cell('nocache', { state: 'uncacheable', execution_count: 2, depends_on: on('a') }),
      cell('rerun', { state: 'ran', execution_count: 3, depends_on: on('nocache') }),
      cell('failed', { state: 'error', execution_count: 4, depends_on: on('rerun') }),
      cell('stale', { state: 'stale', execution_count: 5, depends_on: on('a') }),
      cell('other', { state: 'restored', execution_count: 6 })
    ]);
    expect([...staleAfterEdit(model, 'a')].sort()).toEqual(['failed', 'nocache', 'rerun', 'stale']);
    expect([...staleAfterEdit(model, 'nocache')].sort()).toEqual(['failed', 'rerun']);
    expect(staleAfterEdit(model, 'other').size).toBe(0);
  });

  it('neither marks cells that never executed nor passes staleness through them', () => {
    const model = modelWith([
      cell('a', { state: 'restored', execution_count: 1 }),
      cell('b', { state: 'not_run', depends_on: on('a') }),
      cell('c', { state: 'ran', execution_count: 2, depends_on: on('b') }),
      cell('d', { state: 'ran', execution_count: 3, depends_on: on('a') })
    ]);
    expect([...staleAfterEdit(model, 'a')]).toEqual(['d']);
    // an edit of a cell that never ran makes nothing stale: it is not stale itself
    expect(staleAfterEdit(model, 'b').size).toBe(0);
  });

  it('agrees with the dependents when every cell executed (the fixture notebook)', () => {
    const model = new CacheModel();
    model.setCells(CELLS);
    model.apply((parseKernelMessage(stateMessage()) as any).message);
    for (const id of ['a', 'b', 'c', 'd']) {
      expect(staleAfterEdit(model, id)).toEqual(model.dependents(id));
    }
  });
});

describe('upstreamOf', () => {
  it('follows depends_on up the notebook, transitively', () => {
    const model = modelWith([
      cell('a', { state: 'ran' }),
      cell('b', { state: 'ran', depends_on: on('a') }),
      cell('c', { state: 'not_run', depends_on: [...on('b'), { id: 'gone', names: ['z'] }] }),
      cell('d', { state: 'ran' })
    ]);
    expect([...upstreamOf(model, 'c')].sort()).toEqual(['a', 'b']);
    expect(upstreamOf(model, 'a').size).toBe(0);
    expect(upstreamOf(model, 'd').size).toBe(0);
  });
});
