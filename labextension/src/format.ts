/**
 * Human-readable text for cell states, durations and sizes, shared by the
 * sidebar rows, the graph and the badges on the cells.  Pure.
 */

import type { CacheModel } from './model';
import type { CellState, CellStateName, RemoteStatus, Totals } from './protocol';

/** The longest label kept from a cell's first line (the view ellipsises it further). */
const LABEL_MAX = 120;

/**
 * A cell's label: its first line of code, trimmed, skipping blank lines,
 * comments and a `%%incrcell` directive (else its first comment), as the
 * kernel labels cells: six cells starting with `# slow` are told apart.
 */
export function firstLine(source: string): string {
  const lines = source
    .split('\n')
    .map(line => line.trim())
    .filter(Boolean);
  const code = lines.filter(line => !line.startsWith('#') && !/^%%incrcell\b/.test(line));
  // a trailing comment is not what the line does (kept if a quote follows: maybe in a string)
  const first = code.length ? code[0].replace(/\s+#[^'"]*$/, '') : (lines[0] ?? '');
  return first.length > LABEL_MAX ? first.slice(0, LABEL_MAX - 1) + '…' : first;
}

/**
 * A label cut in two for eliding in the middle: the view lets `head` shrink
 * with an ellipsis and always shows `tail`, so both ends of a long line stay
 * readable at any width (`df_clean = pd.read_csv(…"orders.csv")`).
 */
export function splitLabel(label: string, tail = 14): { head: string; tail: string } {
  if (label.length <= tail * 2) {
    return { head: label, tail: '' };
  }
  return { head: label.slice(0, label.length - tail), tail: label.slice(label.length - tail) };
}

export function formatSeconds(seconds: number): string {
  if (seconds < 1) {
    return `${Math.round(seconds * 1000)} ms`;
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** How a cell is shown: its visual state, a one-line summary, a tooltip, a badge. */
export interface Description {
  /** The state to colour by: a cell state, or 'running' while it executes. */
  state: CellStateName | 'running';
  summary: string;
  tooltip: string;
  /** Short text for the badge on the cell in the notebook; '' for no badge. */
  badge: string;
}

/** Describe a cell from what the kernel reported (undefined: nothing yet). */
export function describeCell(cell: CellState | undefined, running: boolean): Description {
  if (running) {
    return { state: 'running', summary: 'running…', tooltip: 'running now', badge: 'running' };
  }
  if (!cell) {
    return {
      state: 'not_run',
      summary: 'not run yet',
      tooltip: 'not run in this session',
      badge: ''
    };
  }
  if (isOwn(cell)) {
    // incrcell's own magics: not the user's uncacheable cells, never a warning
    const summary =
      cell.own === 'only'
        ? 'incrcell command'
        : 'loads incrcell: runs every time (its imports are cheap)';
    return { state: cell.state, summary, tooltip: tooltip(cell, summary), badge: '' };
  }
  const summary = summarise(cell);
  return { state: cell.state, summary, tooltip: tooltip(cell, summary), badge: BADGES[cell.state] };
}

/** A cell uncacheable only because of incrcell's own magics (`%load_ext incrcell`, `%incrcell`). */
export function isOwn(cell: CellState | undefined): boolean {
  return !!cell && cell.own !== null && (cell.state === 'uncacheable' || cell.state === 'not_run');
}

/**
 * The time a row shows without hovering: what its last execution took (a
 * restore: the restore itself; what it saved is in the summary), or, before
 * the cell ran, what Run All will cost or save.
 */
export function timeText(cell: CellState | undefined): string {
  if (!cell || isOwn(cell)) {
    return '';
  }
  switch (cell.state) {
    case 'restored':
    case 'ran':
    case 'uncacheable':
    case 'error':
      return cell.duration > 0 ? formatSeconds(cell.duration) : '';
    case 'stale':
    case 'not_run':
      if (cell.run_seconds <= 0) {
        return '';
      }
      return cell.prediction === 'restore'
        ? `saves ${formatSeconds(cell.run_seconds)}`
        : `≈ ${formatSeconds(cell.run_seconds)}`;
  }
}

/** What Run All of the notebook would do, from the kernel's predictions (PROTOCOL.md). */
export interface Forecast {
  restore: number;
  run: number;
  /** Restored only if the cells running every time give the same values again. */
  maybe: number;
  /** Seconds Run All takes with incrcell, and without (0: not known). */
  seconds: number;
  plain: number;
}

/** Count and time Run All over `cells` (incrcell's own magic cells left out). */
export function forecast(cells: readonly (CellState | undefined)[]): Forecast {
  const result: Forecast = { restore: 0, run: 0, maybe: 0, seconds: 0, plain: 0 };
  for (const cell of cells) {
    if (!cell) {
      continue;
    }
    result.plain += cell.run_seconds;
    if (cell.own !== null) {
      result.seconds += cell.run_seconds; // incrcell's own cells run, uncounted
    } else if (cell.prediction === 'restore') {
      result.restore += 1;
      result.seconds += cell.state === 'restored' ? cell.duration : 0;
    } else if (cell.prediction === 'unknown') {
      result.maybe += 1;
      result.seconds += cell.run_seconds;
    } else {
      result.run += 1;
      result.seconds += cell.run_seconds;
    }
  }
  return result;
}

/** "Run All will restore 37 cells and run 3 (≈ 0.2 s instead of 4.7 s)". */
export function forecastText(f: Forecast): string {
  const cells = (n: number) => (n === 1 ? '1 cell' : `${n} cells`);
  if (f.restore + f.run + f.maybe === 0) {
    return '';
  }
  let text = f.restore
    ? `Run All will restore ${cells(f.restore)} and run ${f.run}`
    : `Run All will run ${cells(f.run)}`;
  if (f.maybe) {
    text += `; ${f.maybe} more restore if the cells that always run give the same values`;
  }
  if (f.plain > 0 && f.restore + f.maybe > 0) {
    text += ` (≈ ${formatSeconds(f.seconds)} instead of ${formatSeconds(f.plain)})`;
  }
  return text;
}

const BADGES: Record<CellStateName, string> = {
  restored: 'restored',
  ran: 'ran',
  stale: 'stale',
  uncacheable: 'no cache', // fits the prompt column
  error: 'error',
  not_run: ''
};

function summarise(cell: CellState): string {
  const why = (prefix: string, reason: string) => (reason ? `${prefix}: ${reason}` : prefix);
  switch (cell.state) {
    case 'restored':
      return cell.origin === 'remote'
        ? `restored from the team cache, saved ${formatSeconds(cell.saved)}`
        : `restored, saved ${formatSeconds(cell.saved)}`;
    case 'ran':
      return why('ran', cell.reason);
    case 'stale':
      return why('stale', cell.reason || cell.prediction_reason);
    case 'uncacheable':
      return why('uncacheable', cell.reason);
    case 'error':
      return why('error', cell.reason);
    case 'not_run':
      if (cell.prediction === 'restore') {
        return 'not run yet, will restore';
      }
      return cell.prediction === 'run'
        ? why('not run yet, will run', cell.prediction_reason)
        : 'not run yet';
  }
}

function tooltip(cell: CellState, summary: string): string {
  const lines = [summary];
  if (cell.duration > 0) {
    lines.push(`took ${formatSeconds(cell.duration)}`);
  }
  if (cell.prediction !== 'unknown') {
    const reason = cell.prediction_reason ? ` (${cell.prediction_reason})` : '';
    lines.push(`next run: will ${cell.prediction}${reason}`);
  }
  if (cell.reads.length) {
    lines.push(`reads ${cell.reads.join(', ')}`);
  }
  if (cell.writes.length) {
    lines.push(`writes ${cell.writes.join(', ')}`);
  }
  return lines.join('\n');
}

/** The totals line of the panel. */
export function formatTotals(totals: Totals): string {
  const parts = [`${totals.restored} restored`, `${totals.ran} ran`];
  const uncacheable = totals.uncacheable - totals.own; // incrcell's own magics do not count
  if (uncacheable > 0) {
    parts.push(`${uncacheable} uncacheable`);
  }
  if (totals.error) {
    parts.push(`${totals.error} failed`);
  }
  parts.push(`saved ${formatSeconds(totals.saved)}`);
  const entries = `${totals.cache_entries} ${totals.cache_entries === 1 ? 'entry' : 'entries'}`;
  const cap = totals.cache_cap ? ` of ${formatBytes(totals.cache_cap)}` : '';
  parts.push(`cache ${formatBytes(totals.cache_bytes)}${cap} (${entries})`);
  return parts.join(' · ');
}

/** The team cache in the totals line: what came from it, the upload backlog; '' if none. */
export function formatRemote(remote: Readonly<RemoteStatus> | null): string {
  if (!remote) {
    return '';
  }
  if (!remote.available) {
    return `team cache unreachable${remote.error ? ` (${remote.error})` : ''}: local only`;
  }
  const parts = [`team cache: ${remote.fetched} fetched`];
  if (remote.mode === 'readwrite' || remote.pending) {
    parts.push(`${remote.pending} ${remote.pending === 1 ? 'upload' : 'uploads'} pending`);
  }
  if (remote.dropped) {
    parts.push(`${remote.dropped} not uploaded (incrcell cache push)`);
  }
  if (remote.refused) {
    parts.push(`${remote.refused} refused`);
  }
  return parts.join(', ');
}

/** What the panel says above the cells, if anything. */
export function bannerText(model: CacheModel | null): string {
  if (!model) {
    return 'Open a notebook to see the cache state of its cells.';
  }
  switch (model.connection) {
    case 'no-kernel':
      return 'No kernel: start one, then run %load_ext incrcell in the first cell.';
    case 'connecting':
      return 'Connecting to the kernel…';
    case 'unavailable':
      return 'incrcell is not enabled in this kernel: run %load_ext incrcell in the first cell.';
    case 'unsupported':
      return 'incrcell works with Python (IPython) kernels; this notebook uses another language.';
    case 'ready':
      return model.enabled
        ? ''
        : 'Caching is off in this kernel: every cell runs. Turn it on with the switch above.';
  }
}

/** A cell as the panel names it: `[n]` (its In[n]) or `cell k` (its position among the code cells). */
export function cellName(model: CacheModel, id: string): string {
  const count = model.state(id)?.execution_count;
  return count === null || count === undefined ? `cell ${model.indexOf(id) + 1}` : `[${count}]`;
}

/** What editing `id` would invalidate, in words: "Editing [3] makes 2 cells stale: [4], [6]". */
export function impactText(model: CacheModel, id: string, affected: Set<string>): string {
  const name = (cell: string) => cellName(model, cell);
  if (!affected.size) {
    return `Editing ${name(id)} makes no other cell stale.`;
  }
  const cells = [...affected].sort((a, b) => model.indexOf(a) - model.indexOf(b)).map(name);
  const count = cells.length === 1 ? '1 cell' : `${cells.length} cells`;
  return `Editing ${name(id)} makes ${count} stale: ${cells.join(', ')}`;
}
