/**
 * Geometry of the dependency graph: an arc diagram.  Cells sit in notebook
 * order from top to bottom on one vertical line; every edge is a bracket
 * drawn to the left of that line, in a lane chosen so that brackets whose
 * spans overlap never share a lane (short spans innermost).  Pure: the unit
 * tests check it without a DOM.
 */

import type { Edge } from './model';

export const ROW_HEIGHT = 24;
const LANE_GAP = 9;
const MAX_LANES = 16;
const MARGIN = 8;
const NODE_GAP = 10;
const CORNER = 7;
/** The radius of a node's dot; edges stop at its rim so their arrowheads show. */
export const NODE_RADIUS = 5;

export interface NodeBox {
  id: string;
  x: number;
  y: number;
}

export interface Arc extends Edge {
  /** SVG path data, from `from` to `to`. */
  path: string;
  /**
   * Where the edge's label goes: beside the bracket's vertical stroke, half a
   * row from `from`, between two rows' texts.
   */
  labelX: number;
  labelY: number;
}

export interface GraphLayout {
  nodes: NodeBox[];
  arcs: Arc[];
  /** The x where node labels start. */
  textX: number;
  height: number;
}

export function layoutGraph(order: readonly string[], edges: readonly Edge[]): GraphLayout {
  const row = new Map(order.map((id, i) => [id, i]));
  const placed = edges
    .filter(e => row.has(e.from) && row.has(e.to) && e.from !== e.to)
    .map(e => {
      const a = row.get(e.from)!;
      const b = row.get(e.to)!;
      return { edge: e, top: Math.min(a, b), bottom: Math.max(a, b), lane: 0 };
    })
    .sort((p, q) => p.bottom - p.top - (q.bottom - q.top) || p.top - q.top);

  const lanes: Array<Array<[number, number]>> = [];
  for (const p of placed) {
    let lane = lanes.findIndex(spans => spans.every(([t, b]) => b <= p.top || p.bottom <= t));
    if (lane === -1) {
      lane = lanes.length < MAX_LANES ? lanes.push([]) - 1 : MAX_LANES - 1;
    }
    lanes[lane].push([p.top, p.bottom]);
    p.lane = lane;
  }

  const nodeX = MARGIN + lanes.length * LANE_GAP + (lanes.length ? NODE_GAP : 0);
  const y = (i: number) => i * ROW_HEIGHT + ROW_HEIGHT / 2;
  const arcs = placed.map(({ edge, lane }) => {
    const laneX = nodeX - NODE_GAP - lane * LANE_GAP;
    const y1 = y(row.get(edge.from)!);
    const y2 = y(row.get(edge.to)!);
    return {
      ...edge,
      path: bracket(nodeX, laneX, y1, y2),
      labelX: laneX,
      labelY: y1 + (y2 > y1 ? 1 : -1) * (ROW_HEIGHT / 2)
    };
  });
  return {
    nodes: order.map((id, i) => ({ id, x: nodeX, y: y(i) })),
    arcs,
    textX: nodeX + NODE_GAP,
    height: order.length * ROW_HEIGHT
  };
}

/** A bracket from (x, y1) left to lane x, along it, and back to (x, y2), with rounded corners. */
function bracket(x: number, laneX: number, y1: number, y2: number): string {
  const dir = y2 > y1 ? 1 : -1;
  const r = Math.min(CORNER, Math.abs(y2 - y1) / 2);
  const rim = x - NODE_RADIUS - 1;
  return (
    `M${rim},${y1} H${laneX + r} Q${laneX},${y1} ${laneX},${y1 + dir * r} ` +
    `V${y2 - dir * r} Q${laneX},${y2} ${laneX + r},${y2} H${rim}`
  );
}
