import { cacheRows, cacheSummary, formatAgo } from '../src/cacheview';
import { CacheModel } from '../src/model';
import {
  evictMessage,
  parseKernelMessage,
  requestCacheMessage,
  requestVariablesMessage
} from '../src/protocol';
import { variableRows } from '../src/variables';
import { cell, stateMessage } from './fixtures';

function model(cells = stateMessage().cells): CacheModel {
  const m = new CacheModel();
  m.setCells((cells as ReturnType<typeof cell>[]).map(c => ({ id: c.id, source: c.label })));
  m.apply((parseKernelMessage(stateMessage({ cells })) as any).message);
  return m;
}

describe('the views’ messages', () => {
  it('builds the requests', () => {
    expect(requestVariablesMessage()).toEqual({ type: 'request_variables', protocol: 1 });
    expect(requestCacheMessage()).toEqual({ type: 'request_cache', protocol: 1 });
    expect(evictMessage('ab12')).toEqual({ type: 'evict', protocol: 1, key: 'ab12' });
  });

  it('parses the answers, with neutral defaults for what is missing', () => {
    const variables = parseKernelMessage({
      type: 'variables',
      protocol: 1,
      variables: [{ name: 'df', type: 'DataFrame', summary: '3 x 2', size: 48 }, { name: 'x' }]
    });
    expect(variables).toEqual({
      message: {
        type: 'variables',
        busy: false,
        variables: [
          { name: 'df', type: 'DataFrame', summary: '3 x 2', size: 48 },
          { name: 'x', type: '', summary: '', size: null }
        ]
      }
    });
    const cache = parseKernelMessage({
      type: 'cache',
      protocol: 1,
      busy: true,
      entries: [{ key: 'ab', cells: ['a', 3], bytes: 10, origin: 'elsewhere' }]
    });
    expect(cache).toEqual({
      message: {
        type: 'cache',
        busy: true,
        entries: [
          {
            key: 'ab',
            cells: ['a'],
            bytes: 10,
            created: 0,
            used: 0,
            origin: 'local',
            in_remote: false
          }
        ]
      }
    });
    expect('ignored' in parseKernelMessage({ type: 'cache', protocol: 1, entries: [{}] })).toBe(
      true
    );
  });

  it('hands the answers to the views, not to the cells’ state', () => {
    const m = model();
    const seen: string[] = [];
    m.viewData.connect((_, message) => seen.push(message.type));
    const changes: string[] = [];
    m.changed.connect((_, change) => changes.push(change));
    m.apply((parseKernelMessage({ type: 'variables', protocol: 1, variables: [] }) as any).message);
    m.apply((parseKernelMessage({ type: 'cache', protocol: 1, entries: [] }) as any).message);
    expect(seen).toEqual(['variables', 'cache']);
    expect(changes).toEqual([]);
  });
});

describe('variableRows', () => {
  it('sorts names naturally', () => {
    const names = ['f10', 'f2', 'b', 'f1'].map(name => ({ name, type: '', summary: '', size: 0 }));
    expect(variableRows(model(), names).map(r => r.name)).toEqual(['b', 'f1', 'f2', 'f10']);
  });

  const on = (id: string, names: string[]) => [{ id, names }];
  const cells = [
    cell('a', { execution_count: 1, state: 'ran', writes: ['df', 'n'] }),
    cell('b', {
      execution_count: 4,
      state: 'ran',
      reads: ['df'],
      writes: ['df'],
      depends_on: on('a', ['df'])
    }),
    cell('c', {
      execution_count: 3,
      state: 'ran',
      reads: ['df', 'n'],
      depends_on: [...on('b', ['df']), ...on('a', ['n'])]
    }),
    cell('d', { execution_count: 5, state: 'ran', reads: ['console'] })
  ];

  it('names the cell that bound the value the kernel holds, and the cells reading it from there', () => {
    const rows = variableRows(model(cells), [
      { name: 'df', type: 'DataFrame', summary: '3 x 2', size: 2048 },
      { name: 'n', type: 'int', summary: '', size: 28 },
      { name: 'console', type: 'str', summary: '5 characters', size: null }
    ]);
    expect(rows).toEqual([
      {
        name: 'console',
        type: 'str',
        summary: '5 characters',
        size: '',
        definedIn: null,
        usedBy: ['d']
      },
      {
        name: 'df',
        type: 'DataFrame',
        summary: '3 x 2',
        size: '2.0 KiB',
        definedIn: 'b',
        usedBy: ['c']
      },
      { name: 'n', type: 'int', summary: '', size: '28 B', definedIn: 'a', usedBy: ['c'] }
    ]);
  });

  it('before any cell ran: the last writer in notebook order', () => {
    const fresh = cells.map(c => ({ ...c, execution_count: null, state: 'not_run' as const }));
    const [row] = variableRows(model(fresh), [{ name: 'df', type: '', summary: '', size: 1 }]);
    expect(row.definedIn).toBe('b');
  });
});

describe('the cache view', () => {
  const entries = [
    {
      key: 'k2',
      cells: ['c'],
      bytes: 2048,
      created: 1000,
      used: 1900,
      origin: 'remote' as const,
      in_remote: true
    },
    {
      key: 'k1',
      cells: ['b', 'a', 'gone'],
      bytes: 1024,
      created: 0,
      used: 1990,
      origin: 'local' as const,
      in_remote: true
    },
    {
      key: 'k3',
      cells: ['gone'],
      bytes: 1,
      created: 0,
      used: 0,
      origin: 'local' as const,
      in_remote: false
    }
  ];

  it('lists this notebook’s entries in notebook order, with size, last use and the team cache', () => {
    const rows = cacheRows(model(), entries, 2000);
    expect(rows).toEqual([
      {
        key: 'k1',
        cells: ['a', 'b'],
        size: '1.0 KiB',
        used: 'used just now',
        created: 'recorded 33 min ago',
        remote: 'in the team cache'
      },
      {
        key: 'k2',
        cells: ['c'],
        size: '2.0 KiB',
        used: 'used 1 min ago',
        created: 'recorded 16 min ago',
        remote: 'from the team cache'
      }
    ]);
  });

  it('sums this notebook’s share and shows the whole cache against the cap', () => {
    expect(cacheSummary(model(), entries.slice(0, 2))).toEqual([
      'This notebook: 2 entries, 3.0 KiB',
      'Whole cache: 3.0 MiB of 10.0 GiB (0 %)'
    ]);
  });

  it('says how long ago', () => {
    expect([30, 90, 7200, 3 * 86400].map(formatAgo)).toEqual([
      'just now',
      '1 min ago',
      '2 h ago',
      '3 d ago'
    ]);
  });
});
