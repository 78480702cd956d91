/**
 * The incrcell sidebar: for the active notebook, its connection status, the
 * totals, the actions, and either the list of cells or the dependency graph.
 *
 * The panel shows one NotebookController at a time (the one of the notebook
 * the tracker considers current) and redraws from that controller's model
 * changes; the actions go through the app's commands so that the palette,
 * the menus and these buttons behave the same.
 */

import type { CommandRegistry } from '@lumino/commands';
import { Widget } from '@lumino/widgets';

import { CommandIDs } from './commands';
import type { NotebookController } from './controller';
import { bannerText, forecast, forecastText, formatRemote, formatTotals } from './format';
import { CacheView } from './cacheview';
import { GraphView } from './graphview';
import type { CacheModel, Change } from './model';
import { RowsView } from './rows';
import { VariablesView } from './variables';

type Tab = 'cells' | 'graph' | 'variables' | 'cache';
const TAB_NAMES: Record<Tab, string> = {
  cells: 'Cells',
  graph: 'Graph',
  variables: 'Variables',
  cache: 'Cache'
};

/** How often a visible panel asks an idle kernel whether files its cells read changed. */
const CHECK_FILES_MS = 2000;

export class Sidebar extends Widget {
  constructor(private readonly _commands: CommandRegistry) {
    super();
    this.addClass('jp-incrcell-sidebar');
    this.title.caption = 'incrcell: cache state of the cells';

    this._notebookName = element('div', 'jp-incrcell-notebook');
    this._enabled = document.createElement('input');
    this._enabled.type = 'checkbox';
    this._enabled.className = 'jp-incrcell-enabled';
    this._enabled.addEventListener('change', () =>
      this._execute(CommandIDs.toggleEnabled, { enabled: this._enabled.checked })
    );
    const toggle = element('label', 'jp-incrcell-switch');
    toggle.title = 'Turn caching on or off in this kernel (%incrcell on/off)';
    toggle.append(this._enabled, 'caching');
    const header = element('div', 'jp-incrcell-header');
    this._title = element('span', 'jp-incrcell-title', 'incrcell');
    header.append(this._title, toggle);

    this._banner = element('div', 'jp-incrcell-banner');
    this._error = element('div', 'jp-incrcell-error');
    this._error.addEventListener('click', () => this._controller?.model.dismissError());
    this._totals = element('div', 'jp-incrcell-totals');
    this._forecast = element('div', 'jp-incrcell-forecast');

    this._runStale = button('jp-incrcell-run-stale', 'Run the stale cells, in order', () =>
      this._execute(CommandIDs.runStale)
    );
    this._clear = button(
      'jp-incrcell-clear',
      "Delete the cache entries of this notebook's cells",
      () => this._execute(CommandIDs.clear),
      'Clear cache'
    );
    const actions = element('div', 'jp-incrcell-actions');
    actions.append(this._runStale, this._clear);

    const tabs = element('div', 'jp-incrcell-tabs');
    tabs.setAttribute('role', 'tablist');
    for (const tab of Object.keys(TAB_NAMES) as Tab[]) {
      const node = button('jp-incrcell-tab', '', () => this._showTab(tab), TAB_NAMES[tab]);
      node.dataset.tab = tab;
      node.setAttribute('role', 'tab');
      tabs.appendChild(node);
    }

    this._rows = new RowsView({
      reveal: id => this._execute(CommandIDs.revealCell, { id }),
      invalidate: id => this._execute(CommandIDs.invalidate, { id }),
      runWithDependents: id => this._execute(CommandIDs.runWithDependents, { id })
    });
    this._graph = new GraphView(id => this._execute(CommandIDs.revealCell, { id }));
    const reveal = (id: string) => this._execute(CommandIDs.revealCell, { id });
    this._views = { variables: new VariablesView(reveal), cache: new CacheView(reveal) };
    const body = element('div', 'jp-incrcell-body');
    body.append(
      this._rows.node,
      this._graph.node,
      ...Object.values(this._views).map(view => view.node)
    );

    this.node.append(
      header,
      this._notebookName,
      this._banner,
      this._error,
      this._forecast,
      this._totals,
      actions,
      tabs,
      body
    );
    this._showTab('cells');
    this.setController(null);
    this._checker = window.setInterval(() => {
      if (this.isVisible) {
        this._controller?.checkFiles();
      }
    }, CHECK_FILES_MS);
  }

  dispose(): void {
    window.clearInterval(this._checker);
    super.dispose();
  }

  /** Follow another notebook (null: none is open). */
  setController(controller: NotebookController | null): void {
    if (controller === this._controller) {
      return;
    }
    this._controller?.model.changed.disconnect(this._onChange, this);
    this._controller = controller;
    controller?.model.changed.connect(this._onChange, this);
    const model = controller?.model ?? null;
    this._rows.setModel(model);
    this._graph.setModel(model);
    Object.values(this._views).forEach(view => view.setController(controller));
    this._updateStatus();
  }

  private _onChange(_: CacheModel, change: Change): void {
    this._rows.update(change);
    this._graph.update(change);
    Object.values(this._views).forEach(view => view.update(change));
    if (change !== 'selection') {
      this._updateStatus();
    }
  }

  /** Banner, error, totals, the switch and the actions' enabled state. */
  private _updateStatus(): void {
    const model = this._controller?.model ?? null;
    const connection = model?.connection ?? 'none';
    this._notebookName.textContent = this._controller?.panel.title.label ?? '';
    this._title.title = model?.kernelVersion
      ? `incrcell ${model.kernelVersion} in this kernel`
      : '';
    this.node.dataset.connection = connection;
    const banner = bannerText(model);
    this._banner.textContent = banner;
    this._banner.hidden = !banner;
    const error = model?.error ?? null;
    this._error.textContent = error ? `${error} (click to dismiss)` : '';
    this._error.hidden = !error;
    const ready = connection === 'ready';
    const remote = ready ? model!.remote : null;
    this._totals.textContent = ready
      ? [formatTotals(model!.totals), formatRemote(remote)].filter(Boolean).join(' · ')
      : '';
    this._totals.title = remote ? `team cache ${remote.url} (${remote.mode})` : '';
    this._totals.hidden = !ready;
    const cells = ready ? model!.cells.map(c => model!.state(c.id)) : [];
    this._forecast.textContent = forecastText(forecast(cells));
    this._forecast.hidden = !this._forecast.textContent;
    this._enabled.disabled = !ready;
    this._enabled.checked = ready && model!.enabled;
    const stale = ready ? model!.stale.length : 0;
    this._runStale.textContent = `Run stale cells (${stale})`;
    this._runStale.disabled = stale === 0;
    this._clear.disabled = !ready;
  }

  private _showTab(tab: Tab): void {
    this.node.dataset.tab = tab;
    for (const node of this.node.querySelectorAll<HTMLElement>('.jp-incrcell-tab')) {
      node.setAttribute('aria-selected', String(node.dataset.tab === tab));
    }
    this._rows.node.hidden = tab !== 'cells';
    this._graph.node.hidden = tab !== 'graph';
    this._graph.setVisible(tab === 'graph');
    for (const [name, view] of Object.entries(this._views)) {
      view.node.hidden = tab !== name;
      view.setVisible(tab === name);
    }
  }

  private _execute(command: string, args: Record<string, string | boolean> = {}): void {
    this._commands
      .execute(command, args)
      .catch(error => console.error(`incrcell: ${command} failed`, error));
  }

  private _controller: NotebookController | null = null;
  private _title: HTMLElement;
  private _notebookName: HTMLElement;
  private _enabled: HTMLInputElement;
  private _banner: HTMLElement;
  private _error: HTMLElement;
  private _totals: HTMLElement;
  private _forecast: HTMLElement;
  private _checker: number;
  private _runStale: HTMLButtonElement;
  private _clear: HTMLButtonElement;
  private _rows: RowsView;
  private _graph: GraphView;
  private _views: { variables: VariablesView; cache: CacheView };
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

function button(
  className: string,
  title: string,
  onClick: () => void,
  text = ''
): HTMLButtonElement {
  const node = element('button', `jp-incrcell-button ${className}`, text);
  node.title = title;
  node.addEventListener('click', onClick);
  return node;
}
