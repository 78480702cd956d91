/**
 * Everything incrcell keeps for one open notebook panel: the model, the comm
 * link to its kernel, the cells watcher and the badges; and the actions the
 * sidebar and the commands run on it.
 */

import type { ISessionContextDialogs } from '@jupyterlab/apputils';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import type { IDisposable } from '@lumino/disposable';

import { Badges } from './badges';
import { CellsWatcher } from './cells';
import { KernelLink } from './connection';
import { CacheModel } from './model';
import {
  cellsMessage,
  clearMessage,
  enableMessage,
  FrontendMessage,
  invalidateMessage
} from './protocol';

export class NotebookController implements IDisposable {
  readonly model = new CacheModel();

  constructor(
    readonly panel: NotebookPanel,
    private readonly _dialogs: ISessionContextDialogs | null
  ) {
    this._watcher = new CellsWatcher(panel.content, cells => {
      if (this.model.setCells(cells)) {
        this._link.send(cellsMessage(this.model.cells));
      }
    });
    this._link = new KernelLink(panel.sessionContext, this.model, () => {
      this.model.setCells(this._watcher.read());
      return this.model.cells;
    });
    this._badges = new Badges(panel.content, this.model);
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Whether the kernel side answers, so that actions can be sent. */
  get ready(): boolean {
    return this.model.connection === 'ready';
  }

  invalidate(id: string): void {
    this._link.send(invalidateMessage(id));
  }

  /** Send any message to the kernel (the Variables and Cache views' requests). */
  send(message: FrontendMessage): void {
    this._link.send(message);
  }

  clear(): void {
    this._link.send(clearMessage());
  }

  setEnabled(enabled: boolean): void {
    this._link.send(enableMessage(enabled));
  }

  /**
   * Run exactly the stale cells, in notebook order, through the notebook's own
   * execution, so outputs, execution counts and 'stop at the first error'
   * behave as for any run.
   */
  runStale(): Promise<boolean> {
    const stale = new Set(this.model.stale);
    const cells = this.panel.content.widgets.filter(cell => stale.has(cell.model.id));
    if (!cells.length) {
      return Promise.resolve(true);
    }
    return NotebookActions.runCells(
      this.panel.content,
      cells,
      this.panel.sessionContext,
      this._dialogs ?? undefined
    );
  }

  /** Make a cell the active one and scroll it into view. */
  async reveal(id: string): Promise<void> {
    const notebook = this.panel.content;
    const index = notebook.widgets.findIndex(cell => cell.model.id === id);
    if (index === -1) {
      return;
    }
    this.model.select(id);
    notebook.deselectAll();
    notebook.activeCellIndex = index;
    await notebook.scrollToCell(notebook.widgets[index], 'center');
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._badges.dispose();
    this._link.dispose();
    this._watcher.dispose();
    this.model.dispose();
  }

  private _watcher: CellsWatcher;
  private _link: KernelLink;
  private _badges: Badges;
  private _disposed = false;
}
