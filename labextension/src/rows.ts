/**
 * The list of code cells in the sidebar: one row per cell in notebook order,
 * with its execution count, first line of code (elided in the middle, the
 * whole source on hover), its time (saved, taken, or forecast), its state
 * and why (wrapping: never cut), and its actions.
 *
 * Incremental, for long notebooks: rows are kept by cell id and a row's DOM
 * is touched only when what it shows changes; reordering happens only when
 * the notebook's cell order does.
 */

import { describeCell, firstLine, isOwn, splitLabel, timeText } from './format';
import { staleAfterEdit } from './impact';
import type { CacheModel, Change } from './model';

export interface RowActions {
  reveal(id: string): void;
  invalidate(id: string): void;
  /** Run the cell and every cell that depends on it, for real. */
  runWithDependents(id: string): void;
}

interface Row {
  node: HTMLLIElement;
  count: HTMLElement;
  head: HTMLElement;
  tail: HTMLElement;
  time: HTMLElement;
  summary: HTMLElement;
  /** What the row shows, to skip updates that change nothing. */
  key: string;
}

export class RowsView {
  readonly node: HTMLUListElement;

  constructor(private readonly _actions: RowActions) {
    this.node = document.createElement('ul');
    this.node.className = 'jp-incrcell-rows';
    this.node.setAttribute('role', 'list');
    this.node.addEventListener('click', this._onClick);
  }

  /** Show another notebook's model (or none). */
  setModel(model: CacheModel | null): void {
    this._model = model;
    this._rows.clear();
    this._order = [];
    this.node.textContent = '';
    this.update('cells');
  }

  update(change: Change): void {
    const model = this._model;
    if (!model) {
      return;
    }
    switch (change) {
      case 'cells':
        this._syncRows(model);
        this._updateRows(model);
        this._updateSelection(model);
        break;
      case 'states':
        this._updateRows(model);
        this._updateSelection(model);
        break;
      case 'running':
      case 'connection':
        this._updateRows(model);
        break;
      case 'selection':
        this._updateSelection(model);
        break;
    }
  }

  private _syncRows(model: CacheModel): void {
    const ids = model.cells.map(c => c.id);
    const present = new Set(ids);
    for (const [id, row] of this._rows) {
      if (!present.has(id)) {
        row.node.remove();
        this._rows.delete(id);
      }
    }
    for (const id of ids) {
      if (!this._rows.has(id)) {
        this._rows.set(id, createRow(id));
      }
    }
    if (ids.length !== this._order.length || ids.some((id, i) => id !== this._order[i])) {
      const fragment = document.createDocumentFragment();
      ids.forEach(id => fragment.appendChild(this._rows.get(id)!.node));
      this.node.appendChild(fragment);
      this._order = ids;
    }
  }

  private _updateRows(model: CacheModel): void {
    const ready = model.connection === 'ready';
    for (const cell of model.cells) {
      const row = this._rows.get(cell.id);
      if (!row) {
        continue;
      }
      const state = ready ? model.state(cell.id) : undefined;
      const description = describeCell(state, ready && model.running === cell.id);
      const count = state?.execution_count ?? null;
      const label = firstLine(cell.source) || '(empty cell)';
      const time = timeText(state);
      const own = isOwn(state);
      const key = [
        description.state,
        description.summary,
        description.tooltip,
        count,
        cell.source,
        time,
        own
      ].join('\u0000');
      if (key === row.key) {
        continue;
      }
      row.key = key;
      row.node.dataset.state = description.state;
      row.node.classList.toggle('jp-incrcell-mod-own', own);
      row.node.title = `${cell.source.trim()}\n\n${description.tooltip}`;
      row.count.textContent = `[${count ?? ' '}]`;
      const parts = splitLabel(label);
      row.head.textContent = parts.head;
      row.tail.textContent = parts.tail;
      row.time.textContent = time;
      row.summary.textContent = description.summary;
    }
  }

  /** The selected cell, and what an edit of it would invalidate. */
  private _updateSelection(model: CacheModel): void {
    const selected = model.selected;
    const affected = selected ? staleAfterEdit(model, selected) : new Set<string>();
    for (const [id, row] of this._rows) {
      row.node.classList.toggle('jp-mod-selected', id === selected);
      row.node.classList.toggle('jp-incrcell-mod-affected', affected.has(id));
    }
  }

  private _onClick = (event: MouseEvent): void => {
    const target = event.target as HTMLElement;
    const row = target.closest<HTMLElement>('.jp-incrcell-row');
    const id = row?.dataset.cellId;
    if (!id) {
      return;
    }
    if (target.closest('.jp-incrcell-invalidate')) {
      this._actions.invalidate(id);
    } else if (target.closest('.jp-incrcell-run-deps')) {
      this._actions.runWithDependents(id);
    } else {
      this._actions.reveal(id);
    }
  };

  private _model: CacheModel | null = null;
  private _rows = new Map<string, Row>();
  private _order: string[] = [];
}

function createRow(id: string): Row {
  const node = document.createElement('li');
  node.className = 'jp-incrcell-row';
  node.dataset.cellId = id;
  const dot = span('jp-incrcell-dot');
  const count = span('jp-incrcell-count');
  const label = span('jp-incrcell-label');
  const labelHead = span('jp-incrcell-label-head');
  const labelTail = span('jp-incrcell-label-tail');
  label.append(labelHead, labelTail);
  const time = span('jp-incrcell-time');
  const summary = span('jp-incrcell-summary');
  const details = span('jp-incrcell-details'); // why, and the time on the right
  const run = rowButton(
    'jp-incrcell-run-deps',
    'Run this cell and every cell that depends on it, for real',
    '▶'
  );
  const invalidate = rowButton(
    'jp-incrcell-invalidate',
    "Invalidate this cell's cache entry: it runs next time",
    '⟲'
  );
  const head = span('jp-incrcell-row-head');
  head.append(dot, count, label, run, invalidate);
  details.append(summary, time);
  node.append(head, details);
  return { node, count, head: labelHead, tail: labelTail, time, summary, key: '' };
}

function rowButton(className: string, title: string, text: string): HTMLButtonElement {
  const node = document.createElement('button');
  node.className = `jp-incrcell-row-action ${className}`;
  node.title = title;
  node.setAttribute('aria-label', title);
  node.textContent = text;
  return node;
}

function span(className: string): HTMLSpanElement {
  const node = document.createElement('span');
  node.className = className;
  return node;
}
