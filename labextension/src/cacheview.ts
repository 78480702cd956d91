/**
 * The Cache view: this notebook's entries in the local cache (each cell's
 * last executed, recorded and predicted entry), with their size, when they
 * were last used and whether they came from or are in the team cache; one
 * can be evicted (the cell then runs next time).  Above them, the whole
 * cache's size against its cap, and the team cache's line (what was fetched,
 * the upload backlog).  Entries come from the kernel on request
 * (`request_cache`, incrcell/sidebar_views.py), totals from the `state`.
 */

import { firstLine, formatBytes, formatRemote } from './format';
import type { CacheModel } from './model';
import { CacheEntryInfo, CacheMessage, evictMessage, requestCacheMessage } from './protocol';
import { cellLink, RequestedView, viewNote } from './requested';

/** "just now", "5 min ago", "3 h ago", "2 d ago". */
export function formatAgo(seconds: number): string {
  if (seconds < 60) {
    return 'just now';
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min ago`;
  }
  if (seconds < 86400) {
    return `${Math.floor(seconds / 3600)} h ago`;
  }
  return `${Math.floor(seconds / 86400)} d ago`;
}

export interface CacheRow {
  key: string;
  /** The notebook's cells it is an entry of, in notebook order. */
  cells: string[];
  size: string;
  used: string;
  created: string;
  /** "from the team cache", "in the team cache" or ''. */
  remote: string;
}

/** The rows, in notebook order of their first cell; entries of cells no longer in the notebook are left out. */
export function cacheRows(
  model: CacheModel,
  entries: readonly CacheEntryInfo[],
  now: number
): CacheRow[] {
  return entries
    .map(e => ({
      e,
      cells: e.cells
        .filter(id => model.indexOf(id) !== -1)
        .sort((a, b) => model.indexOf(a) - model.indexOf(b))
    }))
    .filter(({ cells }) => cells.length)
    .sort((p, q) => model.indexOf(p.cells[0]) - model.indexOf(q.cells[0]))
    .map(({ e, cells }) => ({
      key: e.key,
      cells,
      size: formatBytes(e.bytes),
      used: `used ${formatAgo(now - e.used)}`,
      created: `recorded ${formatAgo(now - e.created)}`,
      remote: e.origin === 'remote' ? 'from the team cache' : e.in_remote ? 'in the team cache' : ''
    }));
}

/** The lines above the entries: this notebook's share, the whole cache against its cap. */
export function cacheSummary(model: CacheModel, entries: readonly CacheEntryInfo[]): string[] {
  const mine = entries.reduce((sum, e) => sum + e.bytes, 0);
  const count = entries.length === 1 ? '1 entry' : `${entries.length} entries`;
  const totals = model.totals;
  const cap = totals.cache_cap ? ` of ${formatBytes(totals.cache_cap)}` : '';
  const share = totals.cache_cap
    ? ` (${Math.round((100 * totals.cache_bytes) / totals.cache_cap)} %)`
    : '';
  return [
    `This notebook: ${count}, ${formatBytes(mine)}`,
    `Whole cache: ${formatBytes(totals.cache_bytes)}${cap}${share}`,
    formatRemote(model.remote)
  ].filter(Boolean);
}

export class CacheView extends RequestedView<CacheMessage> {
  constructor(private readonly _reveal: (id: string) => void) {
    super('jp-incrcell-cacheview', 'cache', requestCacheMessage);
    this.node.addEventListener('click', event => {
      const target = event.target as HTMLElement;
      const evict = target.closest<HTMLElement>('.jp-incrcell-evict');
      if (evict?.dataset.key) {
        evict.setAttribute('disabled', '');
        this.send(evictMessage(evict.dataset.key));
        return;
      }
      const id = target.closest<HTMLElement>('[data-cell-id]')?.dataset.cellId;
      if (id) {
        this._reveal(id);
      }
    });
  }

  /** The cache's size and entries, the team cache's traffic, and each cell's state and forecast. */
  protected fingerprint(model: CacheModel): string {
    const cells = model.cells.map(c => {
      const state = model.state(c.id);
      return `${c.id}:${state?.execution_count}:${state?.state}:${state?.prediction}`;
    });
    return JSON.stringify([model.totals, model.remote, cells]);
  }

  protected show(model: CacheModel, data: CacheMessage): void {
    const entries = data.entries;
    const summary = document.createElement('div');
    summary.className = 'jp-incrcell-cache-summary';
    for (const line of cacheSummary(model, entries)) {
      const div = document.createElement('div');
      div.textContent = line;
      summary.appendChild(div);
    }
    const { cache_bytes: used, cache_cap: cap } = model.totals;
    if (cap) {
      const meter = document.createElement('meter');
      meter.className = 'jp-incrcell-cache-meter';
      meter.min = 0;
      meter.max = cap;
      meter.high = cap * 0.9;
      meter.value = Math.min(used, cap);
      meter.title = `${formatBytes(used)} of ${formatBytes(cap)}`;
      summary.appendChild(meter);
    }
    this.node.appendChild(summary);

    const rows = cacheRows(model, entries, Date.now() / 1000);
    if (!rows.length) {
      this.node.appendChild(viewNote('No entry of this notebook is in the cache.'));
      return;
    }
    const list = document.createElement('ul');
    list.className = 'jp-incrcell-cache-entries';
    const source = (id: string) => firstLine(model.cells[model.indexOf(id)]?.source ?? '');
    for (const row of rows) {
      const item = document.createElement('li');
      item.className = 'jp-incrcell-cache-entry';
      item.dataset.key = row.key;
      const head = document.createElement('div');
      head.className = 'jp-incrcell-cache-entry-head';
      const label = document.createElement('span');
      label.className = 'jp-incrcell-label';
      label.textContent = source(row.cells[0]);
      const evict = document.createElement('button');
      evict.className = 'jp-incrcell-button jp-incrcell-evict';
      evict.dataset.key = row.key;
      evict.textContent = 'Evict';
      evict.title = 'Delete this entry from the cache: the cell runs next time';
      head.append(...row.cells.map(id => cellLink(model, id, source(id))), label, evict);
      const details = document.createElement('div');
      details.className = 'jp-incrcell-cache-entry-details';
      details.textContent = [row.size, row.used, row.created, row.remote]
        .filter(Boolean)
        .join(' · ');
      details.title = `entry ${row.key}`;
      item.append(head, details);
      list.appendChild(item);
    }
    this.node.appendChild(list);
  }
}
