/**
 * The Variables view: every name in the kernel's namespace with its type,
 * shape or length, size in memory, the cell that defined it and the cells
 * that use it.  Types and sizes come from the kernel on request
 * (`request_variables`, incrcell/sidebar_views.py); which cell defines and
 * uses a name, from the `state` the panel already has (`writes`,
 * `depends_on`), so both always agree with the graph.
 */

import { cellName, firstLine, formatBytes } from './format';
import type { CacheModel } from './model';
import { requestVariablesMessage, VariableInfo, VariablesMessage } from './protocol';
import { cellLink, RequestedView, viewNote as note } from './requested';

export interface VariableRow {
  name: string;
  type: string;
  summary: string;
  size: string;
  /** The cell whose execution bound the value the kernel holds; null if no notebook cell writes it. */
  definedIn: string | null;
  /** The cells that read it from that cell, in notebook order. */
  usedBy: string[];
}

/**
 * The rows of the view, in natural order of names (f2 before f10).  A name several cells write is defined by the one
 * that executed last (the value the kernel holds), or, before any ran, the
 * last in notebook order; its users are the cells that read it from that
 * cell (their `depends_on`).  A name no cell writes (the console's) is used
 * by the cells that read it.
 */
export function variableRows(model: CacheModel, variables: readonly VariableInfo[]): VariableRow[] {
  const writers = new Map<string, string[]>();
  for (const cell of model.cells) {
    for (const name of model.state(cell.id)?.writes ?? []) {
      writers.set(name, [...(writers.get(name) ?? []), cell.id]);
    }
  }
  const executed = (id: string) => model.state(id)?.execution_count ?? -1;
  const byName = [...variables].sort((a, b) =>
    a.name.localeCompare(b.name, undefined, { numeric: true })
  );
  return byName.map(v => {
    const candidates = writers.get(v.name) ?? [];
    const definedIn = candidates.length
      ? candidates.reduce((best, id) => (executed(id) >= executed(best) ? id : best))
      : null;
    const usedBy = model.cells
      .map(c => c.id)
      .filter(id => {
        const state = model.state(id);
        if (!state || id === definedIn) {
          return false;
        }
        return definedIn === null
          ? state.reads.includes(v.name)
          : state.depends_on.some(d => d.id === definedIn && d.names.includes(v.name));
      });
    return {
      name: v.name,
      type: v.type,
      summary: v.summary,
      size: v.size === null ? '' : formatBytes(v.size),
      definedIn,
      usedBy
    };
  });
}

export class VariablesView extends RequestedView<VariablesMessage> {
  constructor(private readonly _reveal: (id: string) => void) {
    super('jp-incrcell-variables', 'variables', requestVariablesMessage);
    this.node.addEventListener('click', event => {
      const id = (event.target as HTMLElement).closest<HTMLElement>('[data-cell-id]')?.dataset
        .cellId;
      if (id) {
        this._reveal(id);
      }
    });
  }

  /** The namespace changes only when something executes: the counts and the last In[n] say so. */
  protected fingerprint(model: CacheModel): string {
    const counts = model.cells.map(c => model.state(c.id)?.execution_count ?? 0);
    return `${JSON.stringify(model.totals)} ${Math.max(0, ...counts)}`;
  }

  protected show(model: CacheModel, data: VariablesMessage): void {
    const rows = variableRows(model, data.variables);
    if (!rows.length) {
      this.node.appendChild(note('No variables yet: run a cell.'));
      return;
    }
    const table = document.createElement('table');
    table.className = 'jp-incrcell-table';
    const head = table.createTHead().insertRow();
    for (const title of ['name', 'type', 'size', 'defined in', 'used by']) {
      const th = document.createElement('th');
      th.textContent = title;
      head.appendChild(th);
    }
    const body = table.createTBody();
    const source = (id: string) => firstLine(model.cells[model.indexOf(id)]?.source ?? '');
    for (const row of rows) {
      const tr = body.insertRow();
      tr.dataset.name = row.name;
      const name = tr.insertCell();
      name.className = 'jp-incrcell-var-name';
      name.textContent = row.name;
      name.title = row.name;
      const type = tr.insertCell();
      type.textContent = row.summary ? `${row.type} (${row.summary})` : row.type;
      type.title = type.textContent;
      const size = tr.insertCell();
      size.className = 'jp-incrcell-num';
      size.textContent = row.size;
      const defined = tr.insertCell();
      if (row.definedIn) {
        defined.appendChild(cellLink(model, row.definedIn, source(row.definedIn)));
      }
      const used = tr.insertCell();
      used.append(...row.usedBy.map(id => cellLink(model, id, source(id))));
      used.title = row.usedBy.map(id => cellName(model, id)).join(' ');
    }
    this.node.appendChild(table);
  }
}
