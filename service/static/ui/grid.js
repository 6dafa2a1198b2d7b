// Drawing what the service answered: frames with their attention weights as bars, and the
// ranked grid of a query (each match's thumbnails, identity, camera, time and distance; for a
// re-scored match the pair attention on both sides).

import { api, formatTime, thumbnailUrl } from "./api.js";

export function element(tag, { className, text, title, ...attributes } = {}, children = []) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  if (title) node.title = title;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) if (child) node.append(child);
  return node;
}

const percent = (weight, largest) => `${Math.max(2, Math.round((100 * weight) / (largest || 1)))}%`;

// One bar per weight, heights relative to the largest; `marked` frames are drawn darker.
export function bars(weights, { marked = new Set(), label = "" } = {}) {
  const largest = Math.max(...weights);
  const strip = element("div", { className: "bars", "aria-label": label });
  weights.forEach((weight, frame) => {
    const bar = element("span", {
      className: marked.has(frame) ? "bar marked" : "bar",
      title: `frame ${frame}: ${weight.toFixed(3)}`,
    });
    bar.style.height = percent(weight, largest);
    strip.append(bar);
  });
  return strip;
}

// A picture of frame `frame` with its attention weight drawn as a bar under it.
function weighted(src, weight, largest, frame) {
  const image = element("img", { alt: `frame ${frame}` });
  Promise.resolve(src).then((url) => { image.src = url; }, () => { image.alt = `frame ${frame} (unavailable)`; });
  const meter = element("div", { className: "meter", title: `attention ${weight.toFixed(3)}` }, [
    element("span"),
  ]);
  meter.firstChild.style.width = percent(weight, largest);
  return element("figure", { className: "frame" }, [
    image,
    meter,
    element("figcaption", { title: `frame ${frame}, attention ${weight.toFixed(3)}` }, [
      element("span", { text: `#${frame}` }),
      element("b", { text: weight.toFixed(2) }),
    ]),
  ]);
}

// The query's (or an enrolment's) uploaded frames: [{url, name}] with one weight each.
export function frameStrip(frames, attention, title) {
  const largest = Math.max(...attention);
  const strip = element("div", { className: "strip" });
  attention.forEach((weight, i) => {
    strip.append(weighted(frames[i] ? frames[i].url : "", weight, largest, i));
  });
  return element("section", { className: "query" }, [element("h3", { text: title }), strip]);
}

// A tracklet's thumbnails, each with a weight: its enrolment attention, or `pair` (the
// tracklet's attention in this pair, one weight per enrolled frame) when re-scored.
export function thumbnailStrip(tracklet, pair) {
  const thumbnails = tracklet.thumbnails || [];
  if (!thumbnails.length) return element("p", { className: "muted", text: "no thumbnails kept" });
  const weights = thumbnails.map((t) => (pair ? pair[t.frame_index] : t.attention));
  const largest = Math.max(...(pair || tracklet.attention));
  const strip = element("div", { className: "strip" });
  thumbnails.forEach((t, i) => {
    strip.append(weighted(thumbnailUrl(t.url), weights[i], largest, t.frame_index));
  });
  return strip;
}

function timeOf(tracklet) {
  const start = formatTime(tracklet.start_time);
  const end = formatTime(tracklet.end_time);
  return start && end && start !== end ? `${start} – ${end}` : start || end || "no time";
}

function facts(match, tracklet) {
  const distance = `distance ${match.distance.toFixed(3)} · score ${match.score.toFixed(3)}`;
  const index = match.index_distance !== null && match.index_distance !== undefined
    ? element("span", { text: `index distance ${match.index_distance.toFixed(3)}` })
    : null;
  return element("div", { className: "facts" }, [
    element("strong", { className: "identity", text: match.identity }),
    element("span", { text: match.camera || "no camera" }),
    element("span", { text: timeOf(tracklet) }),
    element("span", { className: "distance", text: distance }),
    index,
  ]);
}

function pairAttention(match, tracklet) {
  if (!match.attention) return null;
  const shown = new Set((tracklet.thumbnails || []).map((t) => t.frame_index));
  return element("div", { className: "pair" }, [
    element("div", {}, [
      element("small", { text: "query's attention in this pair" }),
      bars(match.query_attention, { label: "query attention in this pair" }),
    ]),
    element("div", {}, [
      element("small", { text: "its attention in this pair (dark: thumbnails)" }),
      bars(match.attention, { marked: shown, label: "gallery attention in this pair" }),
    ]),
  ]);
}

function verdict(match, expected) {
  if (!expected) return "";
  return match.identity === expected ? " correct" : " wrong";
}

async function matchRow(match, expected) {
  const tracklet = await api(`/tracklets/${encodeURIComponent(match.tracklet_id)}`);
  return element("article", {
    className: `match${verdict(match, expected)}`,
    "data-identity": match.identity,
    "data-rank": String(match.rank),
  }, [
    element("div", { className: "rank", text: `#${match.rank}` }),
    thumbnailStrip(tracklet, match.attention),
    facts(match, tracklet),
    pairAttention(match, tracklet),
  ]);
}

function summary(answer) {
  const t = answer.timings;
  const rescored = answer.reranked ? ` · ${answer.reranked} re-scored` : "";
  return `${answer.matches.length} matches${rescored} · ${t.total_ms.toFixed(0)} ms `
    + `(decode ${t.decode_ms.toFixed(0)}, preprocess ${t.preprocess_ms.toFixed(0)}, `
    + `embed ${t.embed_ms.toFixed(0)}, search ${t.search_ms.toFixed(0)})`;
}

// The whole answer: the query strip, then one row per match, best first.
export async function rankedGrid(answer, frames, expected) {
  const rows = await Promise.all(answer.matches.map((match) => matchRow(match, expected)));
  const list = element("div", { className: "matches" }, rows);
  if (!rows.length) {
    list.append(element("p", { className: "muted", text: "Nobody in the gallery is close enough." }));
  }
  return element("div", { className: "grid" }, [
    frameStrip(frames, answer.attention, "Query: frames and their attention"),
    element("p", { className: "muted summary", text: summary(answer) }),
    list,
  ]);
}

function trackTitle(track) {
  const when = track.start_time ? ` · ${timeOf(track)}` : "";
  return `Track ${track.track_id}: frames ${track.first_frame}–${track.last_frame}, `
    + `${track.num_frames} crops${when}`;
}

// A video query's answer: each track of the video with its ranked matches.
export async function videoGrid(job, expected) {
  const sections = await Promise.all(job.tracks.map(async (track) => {
    const rows = await Promise.all((track.matches || []).map((m) => matchRow(m, expected)));
    const nobody = element("p", { className: "muted", text: "Nobody in the gallery is close enough." });
    return element("section", { className: "track", "data-track": String(track.track_id) }, [
      element("h3", { text: trackTitle(track) }),
      element("div", { className: "matches" }, rows.length ? rows : [nobody]),
    ]);
  }));
  const dropped = job.dropped_tracks.map((d) => `track ${d.track_id}: ${d.reason}`).join("; ");
  return element("div", { className: "grid" }, [
    element("p", {
      className: "muted summary",
      text: `${job.source} (${job.camera}): ${job.tracks.length} tracks`
        + (dropped ? `; left out: ${dropped}` : ""),
    }),
    ...sections,
  ]);
}
