/**
 * The dependency graph of the notebook's cells, drawn as SVG from
 * layout.ts's layered layout.  The focused cell (the one pointed at, else the
 * selected one: clicked here or in the Cells tab, or active in the notebook)
 * and its dependencies stand out: what it reads from, directly or not, what
 * reads from it, and the edges between them with the names they carry; the
 * rest fades.  The cells an edit of it would make stale are marked, by the
 * same rule as the Cells tab (impact.ts).  Clicking a node goes to the cell.
 *
 * The SVG is rebuilt only when cells or states change, and only while the
 * view is shown; hover and selection just toggle classes.
 */

import { describeCell, firstLine, impactText } from './format';
import { staleAfterEdit, upstreamOf } from './impact';
import { layoutGraph, NODE_RADIUS } from './layout';
import type { CacheModel, Change } from './model';

const SVG_NS = 'http://www.w3.org/2000/svg';

interface Drawn {
  nodes: Map<string, SVGGElement>;
  arcs: Array<{ from: string; to: string; path: SVGPathElement; label: SVGTextElement | null }>;
}

export class GraphView {
  readonly node: HTMLDivElement;

  constructor(private readonly _reveal: (id: string) => void) {
    this.node = document.createElement('div');
    this.node.className = 'jp-incrcell-graph';
    this._caption = document.createElement('div');
    this._caption.className = 'jp-incrcell-graph-caption';
    this._canvas = document.createElement('div');
    this.node.append(this._caption, this._canvas);
    this.node.addEventListener('click', this._onClick);
    this.node.addEventListener('mouseover', this._onHover);
    this.node.addEventListener('mouseleave', () => {
      this._hovered = null;
      this._highlight(null);
    });
  }

  setModel(model: CacheModel | null): void {
    this._model = model;
    this._hovered = null;
    this._invalidate();
  }

  /** Draw only while shown: a hidden graph just remembers it is out of date. */
  setVisible(visible: boolean): void {
    this._visible = visible;
    this._schedule();
  }

  update(change: Change): void {
    switch (change) {
      case 'selection':
        this._highlight(this._hovered);
        break;
      case 'running':
        this._refreshStates();
        break;
      case 'error':
        break;
      default:
        this._invalidate();
    }
  }

  private _invalidate(): void {
    this._dirty = true;
    this._schedule();
  }

  /** Redraw at the next frame: a burst of state pushes (Run All) costs one drawing. */
  private _schedule(): void {
    if (this._visible && this._dirty && this._frame === null) {
      this._frame = requestAnimationFrame(() => {
        this._frame = null;
        this._render();
      });
    }
  }

  private _render(): void {
    const model = this._model;
    if (!this._visible || !this._dirty) {
      return;
    }
    this._dirty = false;
    this._canvas.textContent = '';
    this._drawn = null;
    if (!model || !model.cells.length) {
      this._caption.textContent = '';
      return;
    }
    const edges = model.connection === 'ready' ? model.edges() : [];
    const layout = layoutGraph(
      model.cells.map(c => c.id),
      edges
    );
    const svg = svgElement('svg', {
      class: 'jp-incrcell-graph-svg',
      width: '100%',
      height: String(layout.height + 4),
      role: 'img',
      'aria-label': 'Dependency graph of the code cells'
    });
    const defs = svgElement('defs', {});
    const marker = svgElement('marker', {
      id: this._markerId,
      viewBox: '0 0 6 6',
      refX: '5',
      refY: '3',
      markerWidth: '6',
      markerHeight: '6',
      orient: 'auto'
    });
    marker.appendChild(svgElement('path', { d: 'M0,0 L6,3 L0,6 z', class: 'jp-incrcell-arrow' }));
    defs.appendChild(marker);
    svg.appendChild(defs);

    const arcGroup = svgElement('g', { class: 'jp-incrcell-arcs' });
    const labelGroup = svgElement('g', { class: 'jp-incrcell-arc-labels' });
    const drawn: Drawn = { nodes: new Map(), arcs: [] };
    for (const arc of layout.arcs) {
      const names = arc.names.join(', ');
      const path = svgElement('path', {
        d: arc.path,
        class: 'jp-incrcell-arc',
        'marker-end': `url(#${this._markerId})`
      });
      path.appendChild(svgTitle(names));
      arcGroup.appendChild(path);
      let label: SVGTextElement | null = null;
      if (arc.label) {
        label = svgElement('text', {
          x: String(arc.label.x),
          y: String(arc.label.y),
          class: 'jp-incrcell-arc-label',
          'dominant-baseline': 'middle'
        });
        label.textContent = arc.label.text;
        labelGroup.appendChild(label);
      }
      drawn.arcs.push({ from: arc.from, to: arc.to, path, label });
    }

    const nodeGroup = svgElement('g', { class: 'jp-incrcell-nodes' });
    for (const box of layout.nodes) {
      const cell = model.cells[model.indexOf(box.id)];
      const state = model.connection === 'ready' ? model.state(box.id) : undefined;
      const description = describeCell(state, model.running === box.id);
      const count = state?.execution_count;
      const group = svgElement('g', {
        class: 'jp-incrcell-node',
        'data-cell-id': box.id,
        'data-state': description.state,
        'data-layer': String(box.layer)
      });
      group.appendChild(
        svgElement('circle', { cx: String(box.x), cy: String(box.y), r: String(NODE_RADIUS) })
      );
      const text = svgElement('text', {
        x: String(layout.textX),
        y: String(box.y),
        'dominant-baseline': 'middle'
      });
      text.textContent = `[${count ?? ' '}] ${firstLine(cell.source)}`;
      group.append(text, svgTitle(description.tooltip));
      nodeGroup.appendChild(group);
      drawn.nodes.set(box.id, group);
    }
    svg.append(arcGroup, nodeGroup, labelGroup);
    this._canvas.appendChild(svg);
    this._drawn = drawn;
    this._highlight(this._hovered);
  }

  /** Recolour the nodes (a cell started running), without redrawing. */
  private _refreshStates(): void {
    const model = this._model;
    if (!this._drawn || !model) {
      return;
    }
    const ready = model.connection === 'ready';
    for (const [id, group] of this._drawn.nodes) {
      const state = ready ? model.state(id) : undefined;
      group.setAttribute('data-state', describeCell(state, model.running === id).state);
    }
  }

  /**
   * Focus a cell (the hovered one, or with `null` the selected one): it and
   * its dependencies stand out, the rest fades; what an edit of it would make
   * stale is marked.
   */
  private _highlight(hovered: string | null): void {
    const drawn = this._drawn;
    const model = this._model;
    if (!drawn || !model) {
      return;
    }
    const focus = hovered ?? model.selected;
    const focusing = focus !== null && drawn.nodes.has(focus);
    const up = focusing ? upstreamOf(model, focus!) : new Set<string>();
    const down = focusing ? model.dependents(focus!) : new Set<string>();
    const stale = focusing ? staleAfterEdit(model, focus!) : new Set<string>();
    this.node.classList.toggle('jp-incrcell-mod-focusing', focusing);
    this._caption.textContent = focusing ? impactText(model, focus!, stale) : HINT;
    for (const [id, group] of drawn.nodes) {
      group.classList.toggle('jp-mod-selected', id === focus);
      group.classList.toggle('jp-incrcell-mod-related', up.has(id) || down.has(id));
      group.classList.toggle('jp-incrcell-mod-affected', stale.has(id));
    }
    const before = (id: string) => id === focus || up.has(id);
    const after = (id: string) => id === focus || down.has(id);
    for (const arc of drawn.arcs) {
      const related =
        focusing && ((before(arc.from) && before(arc.to)) || (after(arc.from) && after(arc.to)));
      const affected = related && after(arc.from) && stale.has(arc.to);
      for (const node of [arc.path, arc.label]) {
        node?.classList.toggle('jp-incrcell-mod-related', related);
        node?.classList.toggle('jp-incrcell-mod-affected', affected);
      }
    }
  }

  private _onClick = (event: MouseEvent): void => {
    const id = nodeId(event);
    if (id) {
      this._reveal(id);
    }
  };

  private _onHover = (event: MouseEvent): void => {
    const id = nodeId(event);
    if (id !== this._hovered) {
      this._hovered = id;
      this._highlight(id);
    }
  };

  private _caption: HTMLDivElement;
  private _canvas: HTMLDivElement;
  private _model: CacheModel | null = null;
  private _visible = false;
  private _dirty = true;
  private _drawn: Drawn | null = null;
  private _hovered: string | null = null;
  private _frame: number | null = null;
  /** Unique per view: marker ids are document-wide. */
  private _markerId = `jp-incrcell-arrow-${Math.random().toString(36).slice(2)}`;
}

const HINT =
  'Point at a cell: what it reads from, what reads from it, what an edit would make stale. Click: go to the cell.';

function nodeId(event: MouseEvent): string | null {
  const group = (event.target as Element).closest?.('.jp-incrcell-node');
  return group?.getAttribute('data-cell-id') ?? null;
}

function svgElement<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string>
): SVGElementTagNameMap[K] {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    element.setAttribute(name, value);
  }
  return element;
}

function svgTitle(text: string): SVGTitleElement {
  const title = svgElement('title', {});
  title.textContent = text;
  return title;
}
