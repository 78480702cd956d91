import { CacheModel, Change } from '../src/model';
import { KernelMessage, parseKernelMessage } from '../src/protocol';
import { cell, CELLS, stateMessage } from './fixtures';

function message(data: Record<string, unknown>): KernelMessage {
  const parsed = parseKernelMessage(data);
  if (!('message' in parsed)) {
    throw new Error(parsed.ignored);
  }
  return parsed.message;
}

/** A model showing the fixture notebook, with its changes recorded. */
function readyModel(): { model: CacheModel; changes: Change[] } {
  const model = new CacheModel();
  model.setCells(CELLS);
  model.apply(message(stateMessage()));
  const changes: Change[] = [];
  model.changed.connect((_, change) => changes.push(change));
  return { model, changes };
}

describe('CacheModel cells', () => {
  it('reports whether the cells changed, so that only changes are sent', () => {
    const model = new CacheModel();
    const changes: Change[] = [];
    model.changed.connect((_, change) => changes.push(change));
    expect(model.setCells(CELLS)).toBe(true);
    expect(model.setCells(CELLS.map(c => ({ ...c })))).toBe(false);
    expect(model.setCells([CELLS[1], CELLS[0], CELLS[2], CELLS[3]])).toBe(true);
    expect(model.setCells([CELLS[1], CELLS[0], CELLS[2], { id: 'd', source: 'pass' }])).toBe(true);
    expect(model.setCells(CELLS.slice(0, 2))).toBe(true);
    expect(changes).toEqual(['cells', 'cells', 'cells', 'cells']);
    expect(model.indexOf('b')).toBe(1);
    expect(model.indexOf('d')).toBe(-1);
  });

  it('does not share the caller’s arrays', () => {
    const model = new CacheModel();
    const cells = CELLS.map(c => ({ ...c }));
    model.setCells(cells);
    cells[0].source = 'changed';
    expect(model.cells[0].source).toBe(CELLS[0].source);
    expect(model.setCells(cells)).toBe(true);
  });
});

describe('CacheModel kernel state', () => {
  it('starts without a kernel and with nothing known', () => {
    const model = new CacheModel();
    model.setCells(CELLS);
    expect(model.connection).toBe('no-kernel');
    expect(model.state('a')).toBeUndefined();
    expect(model.stale).toEqual([]);
    expect(model.totals.restored).toBe(0);
  });

  it('becomes ready on the first kernel message and keeps what it says', () => {
    const model = new CacheModel();
    model.setCells(CELLS);
    model.setConnection('connecting');
    model.apply(message({ type: 'hello', protocol: 1, version: '0.1.0' }));
    expect(model.connection).toBe('ready');
    expect(model.kernelVersion).toBe('0.1.0');
    model.apply(message(stateMessage()));
    expect(model.state('a')?.state).toBe('restored');
    expect(model.state('b')?.reason).toBe('input `x` changed');
    expect(model.totals.cache_bytes).toBe(3 * 1024 * 1024);
    expect(model.enabled).toBe(true);
  });

  it('shows running until the next state', () => {
    const { model, changes } = readyModel();
    model.apply(message({ type: 'running', protocol: 1, id: 'c' }));
    expect(model.running).toBe('c');
    model.apply(message(stateMessage()));
    expect(model.running).toBeNull();
    expect(changes).toEqual(['running', 'running', 'states']);
  });

  it('keeps the last kernel error until dismissed', () => {
    const { model, changes } = readyModel();
    model.apply(message({ type: 'error', protocol: 1, message: 'cache disk full' }));
    expect(model.error).toBe('cache disk full');
    model.dismissError();
    model.dismissError();
    expect(model.error).toBeNull();
    expect(changes).toEqual(['error', 'error']);
  });

  it('follows enable/disable', () => {
    const { model, changes } = readyModel();
    model.apply(message(stateMessage({ enabled: false })));
    expect(model.enabled).toBe(false);
    expect(changes).toEqual(['connection', 'states']);
  });

  it('forgets the kernel’s view when the kernel goes away or restarts', () => {
    const { model, changes } = readyModel();
    model.apply(message({ type: 'running', protocol: 1, id: 'b' }));
    model.setConnection('connecting');
    expect(model.state('a')).toBeUndefined();
    expect(model.running).toBeNull();
    expect(model.stale).toEqual([]);
    expect(model.edges()).toEqual([]);
    expect(model.dependents('a').size).toBe(0);
    expect(model.totals.saved).toBe(0);
    expect(model.cells).toHaveLength(4);
    expect(changes.slice(-2)).toEqual(['states', 'connection']);
    model.setConnection('connecting');
    expect(changes.filter(c => c === 'connection')).toHaveLength(1);
  });
});

describe('CacheModel stale cells', () => {
  it('lists the kernel’s stale cells that are in the notebook, in notebook order', () => {
    const { model } = readyModel();
    model.apply(message(stateMessage({ stale: ['d', 'gone', 'b'] })));
    expect(model.stale).toEqual(['b', 'd']);
    model.setCells([CELLS[3], CELLS[0], CELLS[1], CELLS[2]]);
    expect(model.stale).toEqual(['d', 'b']);
  });
});

describe('CacheModel dependency graph', () => {
  it('has an edge per dependency, labelled with the names', () => {
    const { model } = readyModel();
    expect(model.edges()).toEqual([
      { from: 'a', to: 'b', names: ['x'] },
      { from: 'b', to: 'c', names: ['y'] },
      { from: 'a', to: 'd', names: ['time'] }
    ]);
  });

  it('drops edges to cells no longer in the notebook', () => {
    const { model } = readyModel();
    model.setCells([CELLS[1], CELLS[2], CELLS[3]]);
    expect(model.edges()).toEqual([{ from: 'b', to: 'c', names: ['y'] }]);
  });

  it('finds what an edit would invalidate: the transitive dependents', () => {
    const { model } = readyModel();
    expect([...model.dependents('a')].sort()).toEqual(['b', 'c', 'd']);
    expect([...model.dependents('b')]).toEqual(['c']);
    expect(model.dependents('c').size).toBe(0);
    expect(model.dependents('unknown').size).toBe(0);
  });

  it('survives cycles and diamonds', () => {
    const model = new CacheModel();
    model.setCells(['p', 'q', 'r', 's'].map(id => ({ id, source: '' })));
    model.apply(
      message(
        stateMessage({
          cells: [
            cell('p', { depends_on: [{ id: 's', names: ['late'] }] }),
            cell('q', { depends_on: [{ id: 'p', names: ['v'] }] }),
            cell('r', { depends_on: [{ id: 'p', names: ['v'] }] }),
            cell('s', {
              depends_on: [
                { id: 'q', names: ['w'] },
                { id: 'r', names: ['w2'] }
              ]
            })
          ],
          stale: []
        })
      )
    );
    expect([...model.dependents('p')].sort()).toEqual(['q', 'r', 's']);
    expect([...model.dependents('q')].sort()).toEqual(['p', 'r', 's']);
  });

  it('keeps a 200-cell chain right through repeated states', () => {
    const ids = Array.from({ length: 200 }, (_, i) => `c${i}`);
    const model = new CacheModel();
    model.setCells(ids.map(id => ({ id, source: `${id} = 1` })));
    const cells = ids.map((id, i) =>
      cell(id, {
        state: 'ran',
        depends_on: i
          ? [
              { id: ids[i - 1], names: ['v'] },
              { id: ids[0], names: ['w'] }
            ]
          : []
      })
    );
    for (let i = 0; i < 50; i++) {
      model.apply(message(stateMessage({ cells, stale: ids })));
    }
    expect(model.dependents('c0').size).toBe(199);
    expect(model.edges()).toHaveLength(199 * 2 - 1); // c1 reads v and w from c0: one edge
    expect(model.edges()[0]).toEqual({ from: 'c0', to: 'c1', names: ['v', 'w'] });
    expect(model.stale).toHaveLength(200);
  });
});

describe('CacheModel selection', () => {
  it('notifies only real changes', () => {
    const { model, changes } = readyModel();
    model.select('b');
    model.select('b');
    model.select(null);
    expect(changes).toEqual(['selection', 'selection']);
  });
});
