/**
 * The notebook's code cells (ids and sources), read again after each burst
 * of edits.  A keystroke only restarts a timer; reading the sources happens
 * once per pause (PROTOCOL.md: `cells`, debounced ~300 ms).
 */

import type { Notebook } from '@jupyterlab/notebook';
import type { IDisposable } from '@lumino/disposable';

import { Debouncer } from './debounce';
import type { CellSource } from './protocol';

const DEBOUNCE_MS = 300;

export class CellsWatcher implements IDisposable {
  /**
   * @param onChange - called with the code cells after each burst of changes
   *   (including outputs and metadata changes: the caller ignores repeats).
   */
  constructor(
    private readonly _notebook: Notebook,
    private readonly _onChange: (cells: CellSource[]) => void
  ) {
    this._debouncer = new Debouncer(() => this._onChange(this.read()), DEBOUNCE_MS);
    _notebook.modelChanged.connect(this._watchModel, this);
    this._watchModel();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** The code cells now, in notebook order. */
  read(): CellSource[] {
    const cells: CellSource[] = [];
    const model = this._notebook.model;
    if (!model) {
      return cells;
    }
    for (let i = 0; i < model.cells.length; i++) {
      const cell = model.cells.get(i);
      if (cell.type === 'code') {
        cells.push({ id: cell.id, source: cell.sharedModel.getSource() });
      }
    }
    return cells;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._debouncer.cancel();
    this._notebook.modelChanged.disconnect(this._watchModel, this);
    this._unwatch();
  }

  private _watchModel(): void {
    this._unwatch();
    const model = this._notebook.model;
    if (!model) {
      return;
    }
    const schedule = () => this._debouncer.schedule();
    model.contentChanged.connect(schedule);
    model.cells.changed.connect(schedule);
    this._unwatch = () => {
      model.contentChanged.disconnect(schedule);
      model.cells.changed.disconnect(schedule);
    };
    schedule();
  }

  private _debouncer: Debouncer;
  private _unwatch: () => void = () => undefined;
  private _disposed = false;
}
