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
  Ack,
  cellsMessage,
  checkFilesMessage,
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
        void this._link.send(cellsMessage(this.model.cells));
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

  /**
   * The actions: each resolves once the kernel has acknowledged it (retried
   * until then: see KernelLink), with its error or result.
   */
  invalidate(id: string): Promise<Ack> {
    return this._link.send(invalidateMessage(id));
  }

  /** Send any message to the kernel (the Variables and Cache views' requests). */
  send(message: FrontendMessage): Promise<Ack> {
    return this._link.send(message);
  }

  clear(): Promise<Ack> {
    return this._link.send(clearMessage());
  }

  setEnabled(enabled: boolean): Promise<Ack> {
    return this._link.send(enableMessage(enabled));
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

  // panel: a file a recorded cell read changed on disk? (the kernel answers only if so)
  checkFiles(): void {
    if (this.ready && this.panel.sessionContext.session?.kernel?.status === 'idle') {
      this._link.send(checkFilesMessage());
    }
  }

  // panel: forget the entries of the cell and its dependents, then run them, in order
  async runWithDependents(id: string): Promise<boolean> {
    const ids = new Set([id, ...this.model.dependents(id)]);
    const answered = new Promise<void>(resolve => {
      const done = () => {
        this.model.changed.disconnect(onChange);
        clearTimeout(timer);
        resolve();
      };
      const onChange = (_: unknown, change: string) => change === 'states' && done();
      const timer = setTimeout(done, 5000);
      this.model.changed.connect(onChange);
    });
    ids.forEach(cell => this._link.send(invalidateMessage(cell)));
    await answered;
    const cells = this.panel.content.widgets.filter(cell => ids.has(cell.model.id));
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
