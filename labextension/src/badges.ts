/**
 * The state of each code cell, shown on the cell itself: a
 * `data-incrcell-state` attribute (the colour) and a `--incrcell-badge`
 * custom property (the text) on the cell node, which style/base.css turns
 * into a small badge under the input prompt.  Both live on the cell's outer
 * node, which exists even while a windowed notebook has not rendered the
 * cell's inside, and are inherited by the prompt whenever it is rendered.
 *
 * A stale cell's old outputs are dimmed and its "restored by incrcell" note
 * is replaced by `--incrcell-note` (why it is stale), as ipyflow does.
 */

import type { Notebook } from '@jupyterlab/notebook';
import type { IDisposable } from '@lumino/disposable';

import { describeCell } from './format';
import type { CacheModel, Change } from './model';

const ATTRIBUTE = 'incrcellState';
const TEXT = '--incrcell-badge';
const NOTE = '--incrcell-note';

export class Badges implements IDisposable {
  constructor(
    private readonly _notebook: Notebook,
    private readonly _model: CacheModel
  ) {
    _model.changed.connect(this._onChange, this);
    this._update();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._model.changed.disconnect(this._onChange, this);
    for (const cell of this._notebook.widgets) {
      delete cell.node.dataset[ATTRIBUTE];
      cell.node.style.removeProperty(TEXT);
      cell.node.style.removeProperty(NOTE);
    }
  }

  private _onChange(_: CacheModel, change: Change): void {
    if (change !== 'selection' && change !== 'error') {
      this._update();
    }
  }

  /** Touch only the cells whose badge changes. */
  private _update(): void {
    const model = this._model;
    const show = model.connection === 'ready' && model.enabled;
    for (const cell of this._notebook.widgets) {
      if (cell.model.type !== 'code') {
        continue;
      }
      const id = cell.model.id;
      const description = show ? describeCell(model.state(id), model.running === id) : null;
      const state = description?.badge ? description.state : undefined;
      const note = state === 'stale' ? `⚠ ${description!.summary} (will run)` : '';
      if (
        cell.node.dataset[ATTRIBUTE] === state &&
        cell.node.style.getPropertyValue(NOTE) === (note ? JSON.stringify(note) : '')
      ) {
        continue;
      }
      if (state) {
        cell.node.dataset[ATTRIBUTE] = state;
        cell.node.style.setProperty(TEXT, JSON.stringify(description!.badge));
      } else {
        delete cell.node.dataset[ATTRIBUTE];
        cell.node.style.removeProperty(TEXT);
      }
      if (note) {
        cell.node.style.setProperty(NOTE, JSON.stringify(note));
      } else {
        cell.node.style.removeProperty(NOTE);
      }
    }
  }

  private _disposed = false;
}
