import {
  bannerText,
  describeCell,
  firstLine,
  forecast,
  forecastText,
  splitLabel,
  timeText,
  formatBytes,
  formatRemote,
  formatSeconds,
  formatTotals,
  impactText
} from '../src/format';
import { CacheModel } from '../src/model';
import { parseKernelMessage } from '../src/protocol';
import { cell, CELLS, stateMessage } from './fixtures';

describe('firstLine', () => {
  it('is the first non-empty line, trimmed', () => {
    expect(firstLine('\n   \n  df = load()  \nmore')).toBe('df = load()');
    expect(firstLine('')).toBe('');
    expect(firstLine('x'.repeat(500))).toHaveLength(120);
  });

  it('skips comments and the %%incrcell directive: the first line of code', () => {
    expect(firstLine('# slow\n\n# really\ndf = load()')).toBe('df = load()');
    expect(firstLine('%%incrcell nocache\n# why\nx = 1')).toBe('x = 1');
    expect(firstLine('# only a comment')).toBe('# only a comment');
    expect(firstLine('x = 1  # one')).toBe('x = 1');
    expect(firstLine('s = "a # b"')).toBe('s = "a # b"');
  });

  it('is cut in the middle for eliding, both ends kept', () => {
    expect(splitLabel('x = 1')).toEqual({ head: 'x = 1', tail: '' });
    const long = 'orders = pd.read_csv("data/2024/orders_final.csv")';
    const { head, tail } = splitLabel(long);
    expect(head + tail).toBe(long);
    expect(tail).toBe('rs_final.csv")');
  });
});

describe('the forecast and the times a row shows', () => {
  const cells = [
    cell('load', { state: 'not_run', prediction: 'run', own: 'magic', run_seconds: 0.1 }),
    cell('a', { prediction: 'restore', run_seconds: 4 }),
    cell('b', { prediction: 'restore', run_seconds: 0.5 }),
    cell('c', { prediction: 'run', run_seconds: 0.2 }),
    cell('d', { prediction: 'unknown', run_seconds: 0 }),
    cell('status', { state: 'uncacheable', prediction: 'run', own: 'only' })
  ];

  it("counts what Run All will restore and run, not incrcell's own cells", () => {
    const f = forecast(cells);
    expect(f).toMatchObject({ restore: 2, run: 1, maybe: 1 });
    expect(f.plain).toBeCloseTo(4.8);
    expect(f.seconds).toBeCloseTo(0.3);
    expect(forecastText(f)).toBe(
      'Run All will restore 2 cells and run 1; 1 more restore if the cells that always run ' +
        'give the same values (≈ 300 ms instead of 4.8 s)'
    );
    expect(forecastText(forecast([cells[3]]))).toBe('Run All will run 1 cell');
    expect(forecastText(forecast([]))).toBe('');
  });

  it('shows saved, taken or forecast time without hovering', () => {
    expect(timeText(cell('a', { state: 'restored', saved: 1.5, duration: 0.02 }))).toBe('20 ms');
    expect(timeText(cell('a', { state: 'ran', duration: 0.25 }))).toBe('250 ms');
    expect(timeText(cells[1])).toBe('saves 4.0 s');
    expect(timeText(cells[3])).toBe('≈ 200 ms');
    expect(timeText(cells[0])).toBe('');
  });

  it("words incrcell's own cells without a warning or a badge", () => {
    const own = describeCell(cells[5], false);
    expect(own.summary).toBe('incrcell command');
    expect(own.badge).toBe('');
    expect(describeCell(cells[0], false).summary).toMatch(/^loads incrcell/);
  });
});

describe('formatSeconds and formatBytes', () => {
  it('pick a readable unit', () => {
    expect(formatSeconds(0.0042)).toBe('4 ms');
    expect(formatSeconds(1.234)).toBe('1.2 s');
    expect(formatSeconds(42.4)).toBe('42 s');
    expect(formatSeconds(125)).toBe('2 min 5 s');
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(577 * 1024 * 1024)).toBe('577 MiB');
  });
});

describe('describeCell', () => {
  it('says what happened and why', () => {
    expect(describeCell(cell('a', { state: 'restored', saved: 1.5 }), false)).toMatchObject({
      state: 'restored',
      summary: 'restored, saved 1.5 s',
      badge: 'restored'
    });
    expect(describeCell(cell('a', { state: 'ran', reason: 'source changed' }), false).summary).toBe(
      'ran: source changed'
    );
    expect(describeCell(cell('a', { state: 'ran' }), false).summary).toBe('ran');
    expect(
      describeCell(
        cell('a', { state: 'stale', prediction: 'run', prediction_reason: 'input `y` changed' }),
        false
      ).summary
    ).toBe('stale: input `y` changed');
    expect(
      describeCell(cell('a', { state: 'uncacheable', reason: 'uses a magic' }), false).summary
    ).toBe('uncacheable: uses a magic');
    expect(
      describeCell(cell('a', { state: 'error', reason: 'ZeroDivisionError' }), false).badge
    ).toBe('error');
  });

  it('says a restore came from the team cache', () => {
    const restored = cell('a', { state: 'restored', saved: 1.5, origin: 'remote' });
    expect(describeCell(restored, false).summary).toBe('restored from the team cache, saved 1.5 s');
    expect(describeCell({ ...restored, origin: 'local' }, false).summary).toBe(
      'restored, saved 1.5 s'
    );
  });

  it('predicts for cells not run yet', () => {
    expect(describeCell(cell('a', { prediction: 'restore' }), false).summary).toBe(
      'not run yet, will restore'
    );
    expect(
      describeCell(cell('a', { prediction: 'run', prediction_reason: 'not in the cache' }), false)
        .summary
    ).toBe('not run yet, will run: not in the cache');
    expect(describeCell(cell('a'), false)).toMatchObject({
      state: 'not_run',
      summary: 'not run yet',
      badge: ''
    });
    expect(describeCell(undefined, false)).toMatchObject({ state: 'not_run', badge: '' });
  });

  it('shows running over any state', () => {
    expect(describeCell(cell('a', { state: 'restored' }), true)).toMatchObject({
      state: 'running',
      badge: 'running'
    });
  });

  it('puts timing, prediction, reads and writes in the tooltip', () => {
    const tooltip = describeCell(
      cell('a', {
        state: 'ran',
        reason: 'source changed',
        duration: 2.5,
        prediction: 'restore',
        reads: ['x', 'y'],
        writes: ['z']
      }),
      false
    ).tooltip;
    expect(tooltip.split('\n')).toEqual([
      'ran: source changed',
      'took 2.5 s',
      'next run: will restore',
      'reads x, y',
      'writes z'
    ]);
  });
});

describe('formatTotals', () => {
  it('summarises the session', () => {
    const totals = {
      restored: 3,
      ran: 2,
      uncacheable: 0,
      error: 1,
      saved: 12.3,
      cache_bytes: 2048,
      cache_cap: 0,
      cache_entries: 1,
      own: 0
    };
    expect(formatTotals(totals)).toBe(
      '3 restored · 2 ran · 1 failed · saved 12 s · cache 2.0 KiB (1 entry)'
    );
    // incrcell's own magic cells are not the user's uncacheable cells
    expect(formatTotals({ ...totals, uncacheable: 2, own: 1 })).toContain('2 ran · 1 uncacheable');
    expect(formatTotals({ ...totals, uncacheable: 1, own: 1 })).not.toContain('uncacheable');
    expect(formatTotals({ ...totals, cache_cap: 4096 })).toContain(
      'cache 2.0 KiB of 4.0 KiB (1 entry)'
    );
  });
});

describe('bannerText', () => {
  it('tells how to enable incrcell, and stays quiet when all is well', () => {
    const model = new CacheModel();
    expect(bannerText(null)).toMatch(/Open a notebook/);
    expect(bannerText(model)).toMatch(/No kernel/);
    model.setConnection('unavailable');
    expect(bannerText(model)).toBe(
      'incrcell is not enabled in this kernel: run %load_ext incrcell in the first cell.'
    );
    model.setConnection('unsupported');
    expect(bannerText(model)).toMatch(/Python/);
    model.setConnection('ready');
    expect(bannerText(model)).toBe('');
  });
});

describe('impactText', () => {
  it('names what an edit would make stale, by In[n] or position', () => {
    const model = new CacheModel();
    model.setCells(CELLS);
    model.apply((parseKernelMessage(stateMessage()) as any).message);
    expect(impactText(model, 'a', model.dependents('a'))).toBe(
      'Editing [1] makes 3 cells stale: [2], [3], [4]'
    );
    expect(impactText(model, 'b', model.dependents('b'))).toBe(
      'Editing [2] makes 1 cell stale: [3]'
    );
    expect(impactText(model, 'c', model.dependents('c'))).toBe(
      'Editing [3] makes no other cell stale.'
    );
    model.setConnection('connecting');
    expect(impactText(model, 'b', new Set(['c']))).toBe(
      'Editing cell 2 makes 1 cell stale: cell 3'
    );
  });
});

describe('formatRemote', () => {
  const remote = {
    url: 's3://team/main',
    mode: 'readwrite',
    available: true,
    error: null,
    fetched: 3,
    refused: 0,
    uploaded: 5,
    pending: 1,
    dropped: 0
  };

  it('shows what came from the team cache and the upload backlog', () => {
    expect(formatRemote(null)).toBe('');
    expect(formatRemote(remote)).toBe('team cache: 3 fetched, 1 upload pending');
    expect(formatRemote({ ...remote, mode: 'read', pending: 0 })).toBe('team cache: 3 fetched');
    expect(formatRemote({ ...remote, pending: 0, dropped: 2, refused: 1 })).toBe(
      'team cache: 3 fetched, 0 uploads pending, 2 not uploaded (incrcell cache push), 1 refused'
    );
    expect(formatRemote({ ...remote, available: false, error: 'timed out' })).toBe(
      'team cache unreachable (timed out): local only'
    );
  });
});
