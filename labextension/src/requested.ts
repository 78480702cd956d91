/**
 * What the Variables and Cache views share: they show data the kernel
 * computes only when asked (`request_variables`, `request_cache`), so they
 * ask only while shown, once the kernel is quiet: after a `state`, when no
 * state or `running` came for `QUIET_MS` and no cell runs.  A Run All with
 * the view open costs the kernel one request at its end, not one per cell;
 * an answer marked `busy` (a cell had started) is dropped, and the next
 * state asks again.  A view asks again only when what it shows may have
 * changed (its `fingerprint` of the model's state), not after every state.
 */

import type { NotebookController } from './controller';
import { cellName } from './format';
import type { CacheModel, Change } from './model';
import type { CacheMessage, FrontendMessage, VariablesMessage } from './protocol';

export const QUIET_MS = 400;

export abstract class RequestedView<T extends VariablesMessage | CacheMessage> {
  readonly node: HTMLDivElement;

  constructor(
    className: string,
    private readonly _type: T['type'],
    private readonly _request: () => FrontendMessage
  ) {
    this.node = document.createElement('div');
    this.node.className = className;
  }

  setController(controller: NotebookController | null): void {
    this._controller?.model.viewData.disconnect(this._onData, this);
    this._controller = controller;
    controller?.model.viewData.connect(this._onData, this);
    this.data = null;
    this._asked = null;
    this.render();
    this._ask();
  }

  setVisible(visible: boolean): void {
    this._visible = visible;
    if (visible) {
      this.render();
      this._ask();
    }
  }

  update(change: Change): void {
    if (change === 'states' || change === 'running' || change === 'connection') {
      if (this._visible) {
        this.render();
      }
      this._ask();
    } else if (change === 'cells' && this._visible) {
      this.render();
    }
  }

  protected get model(): CacheModel | null {
    return this._controller?.model ?? null;
  }

  protected send(message: FrontendMessage): void {
    this._controller?.send(message);
  }

  /** Redraw: nothing while the kernel is not ready, a note until its first answer, then `show`. */
  protected render(): void {
    const model = this.model;
    this.node.textContent = '';
    if (!model || model.connection !== 'ready') {
      return;
    }
    if (!this.data) {
      this.node.appendChild(viewNote('Asking the kernel…'));
      return;
    }
    this.show(model, this.data);
  }

  /** Draw the kernel's answer `data` and the model into the (emptied) node. */
  protected abstract show(model: CacheModel, data: T): void;

  /** What the kernel's answer depends on, as far as the model knows: equal means no need to ask. */
  protected abstract fingerprint(model: CacheModel): string;

  /** The kernel's last answer; null before the first. */
  protected data: T | null = null;

  /** Ask once the kernel has been quiet for a while (every new change restarts the wait). */
  private _ask(): void {
    if (this._timer !== null) {
      clearTimeout(this._timer);
      this._timer = null;
    }
    if (!this._visible || this.model?.connection !== 'ready') {
      return;
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      const model = this.model;
      if (this._visible && model?.connection === 'ready' && model.running === null) {
        const fingerprint = this.fingerprint(model);
        if (fingerprint !== this._asked) {
          this._asked = fingerprint;
          this.send(this._request());
        }
      }
    }, QUIET_MS);
  }

  private _onData(_: CacheModel, message: VariablesMessage | CacheMessage): void {
    if (message.type !== this._type) {
      return;
    }
    if (message.busy) {
      this._asked = null; // ask again after the next state
      return;
    }
    this.data = message as T;
    if (this._visible) {
      this.render();
    }
  }

  private _controller: NotebookController | null = null;
  private _visible = false;
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _asked: string | null = null;
}

/** A small clickable reference to a cell (the views' click handler reads `data-cell-id`). */
export function cellLink(model: CacheModel, id: string, label: string): HTMLButtonElement {
  const link = document.createElement('button');
  link.className = 'jp-incrcell-cell-link';
  link.dataset.cellId = id;
  link.textContent = cellName(model, id);
  link.title = label;
  return link;
}

/** A line of text in place of a view's content (nothing yet, nothing to show). */
export function viewNote(text: string): HTMLElement {
  const node = document.createElement('div');
  node.className = 'jp-incrcell-view-note';
  node.textContent = text;
  return node;
}
