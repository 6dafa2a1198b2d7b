// The page: the key, the three views (query, enroll, gallery) and their forms.

import { ApiError, api, apiKey, formatTime, framesBody, setApiKey, utcTime } from "./api.js";
import { element, frameStrip, rankedGrid, thumbnailStrip, videoGrid } from "./grid.js";
import { zipFrames } from "./zip.js";

const PAGE_SIZE = 24;
const $ = (selector) => document.querySelector(selector);
const gallery = { offset: 0, contains: "", loads: 0 };

function say(text, kind = "error") {
  const box = $("#message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

function failed(error) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    say(`${error.message} Type the key above.`);
    $("#api-key").focus();
  } else {
    say(error instanceof ApiError ? `${error.code}: ${error.message}` : String(error));
  }
}

async function busy(button, work) {
  button.disabled = true;
  say("");
  try {
    await work();
  } catch (error) {
    failed(error);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------------------------ the header

async function refreshStatus() {
  try {
    const ready = await api("/readyz");
    const thumbs = ready.gallery.thumbnails;
    $("#status").textContent = `${ready.model.name} ${ready.model.version} on `
      + `${ready.provider.replace("ExecutionProvider", "")} · ${ready.gallery.backend} gallery: `
      + `${ready.gallery.count} tracklets, `
      + (thumbs.enabled ? `${thumbs.count} thumbnails` : "thumbnails off");
  } catch (error) {
    $("#status").textContent = `not ready (${error.message})`;
  }
}

function show(view) {
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.view === view);
  }
  for (const section of document.querySelectorAll("main > section")) {
    section.hidden = section.id !== `view-${view}`;
  }
  if (view === "gallery") loadGallery().catch(failed);
}

// ---------------------------------------------------------------------------- the frames

// What the person chose, as pictures the page can show: [{url, name}] in the service's order.
async function chosenFrames(form) {
  const archive = form.elements.archive.files[0];
  if (archive) {
    try {
      const frames = await zipFrames(archive);
      return frames.map((f) => ({ url: URL.createObjectURL(f.blob), name: f.name }));
    } catch {
      return []; // the service still reads it (or says what is wrong with it)
    }
  }
  return [...form.elements.frames.files].map((f) => ({ url: URL.createObjectURL(f), name: f.name }));
}

// --------------------------------------------------------------------------------- query

function queryFields(form) {
  const value = (name) => form.elements[name].value.trim();
  return {
    top_k: value("top_k"),
    max_distance: value("max_distance"),
    rerank: value("rerank"),
    cameras: value("cameras"),
    exclude_cameras: value("exclude_cameras"),
    start_after: utcTime(value("start_after")),
    end_before: utcTime(value("end_before")),
    group_by_identity: form.elements.group_by_identity.checked ? "true" : "false",
  };
}

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

function progressText(job) {
  const p = job.progress;
  return `Video job ${job.status}: ${p.frames_decoded} of ${p.frames_total} frames decoded, `
    + `${p.tracks_embedded} of ${p.tracks_total} tracks embedded…`;
}

// POST /videos?mode=query, then its job polled until it ends.
async function runVideoQuery(form) {
  const body = new FormData();
  for (const [name, value] of Object.entries(queryFields(form))) {
    if (value !== "") body.append(name, value);
  }
  body.append("camera", form.elements.video_camera.value.trim());
  body.append("video", form.elements.video.files[0]);
  const tracks = form.elements.tracks.files[0];
  if (!tracks) throw new ApiError(0, "no_tracks", "choose the tracker's MOT file of the video");
  body.append("tracks", tracks);
  let job = await api("/videos?mode=query", { method: "POST", body });
  while (job.status === "queued" || job.status === "running") {
    $("#answer").replaceChildren(element("p", { className: "muted", text: progressText(job) }));
    await sleep(500);
    job = await api(`/videos/${encodeURIComponent(job.job_id)}`);
  }
  if (job.status !== "succeeded") {
    const error = job.error || { status: 0, code: job.status, message: "the video job failed" };
    throw new ApiError(error.status, error.code, error.message);
  }
  // One "who it is" cannot judge every track of a video: no green and red here.
  $("#answer").replaceChildren(await videoGrid(job));
}

async function runQuery(event) {
  event.preventDefault();
  const form = event.target;
  await busy(form.querySelector("button[type=submit]"), async () => {
    if (form.elements.video.files[0]) {
      await runVideoQuery(form);
      return;
    }
    const body = framesBody(form, queryFields(form));
    const answer = await api("/query", { method: "POST", body });
    const frames = await chosenFrames(form);
    const grid = await rankedGrid(answer, frames, form.elements.expected.value.trim());
    $("#answer").replaceChildren(grid);
  });
}

// -------------------------------------------------------------------------------- enroll

async function runEnroll(event) {
  event.preventDefault();
  const form = event.target;
  await busy(form.querySelector("button[type=submit]"), async () => {
    const value = (name) => form.elements[name].value.trim();
    const body = framesBody(form, {
      identity: value("identity"),
      camera: value("camera"),
      start_time: utcTime(value("start_time")),
      end_time: utcTime(value("end_time")),
    });
    const enrolled = await api("/tracklets", { method: "POST", body });
    const tracklet = await api(`/tracklets/${enrolled.tracklet_id}`);
    const frames = await chosenFrames(form);
    $("#enrolled").replaceChildren(
      element("p", {
        className: "done",
        text: `Enrolled ${enrolled.num_frames} frames as ${enrolled.identity}`
          + ` (tracklet ${enrolled.tracklet_id}).`,
      }),
      frameStrip(frames, enrolled.attention, "Frames and their attention"),
      element("h3", { text: "Thumbnails kept" }),
      thumbnailStrip(tracklet),
    );
    say("");
    refreshStatus();
  });
}

// ------------------------------------------------------------------------------- gallery

function confirmDelete(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

async function deleteIdentity(item) {
  const question = `Delete ${item.identity} and its ${item.num_tracklets} tracklet(s)? `
    + "This cannot be undone.";
  if (!(await confirmDelete(question))) return;
  const name = encodeURIComponent(item.identity);
  const deleted = await api(`/identities/${name}`, { method: "DELETE" });
  say(`Deleted ${deleted.identity} (${deleted.deleted_tracklets} tracklets).`, "info");
  await loadGallery();
  refreshStatus();
}

async function identityCard(item) {
  const detail = await api(`/identities/${encodeURIComponent(item.identity)}`);
  const seen = item.first_seen
    ? `${formatTime(item.first_seen)} – ${formatTime(item.last_seen)}`
    : "no times";
  const remove = element("button", { type: "button", className: "danger", text: "Delete…" });
  remove.addEventListener("click", () => deleteIdentity(item).catch(failed));
  const tracklets = detail.tracklets.slice(0, 4).map((tracklet) => element("div", {
    className: "tracklet",
  }, [
    element("small", { text: tracklet.camera || "no camera" }),
    thumbnailStrip(tracklet),
  ]));
  return element("article", { className: "card", "data-identity": item.identity }, [
    element("h3", { text: item.identity }),
    element("p", {
      className: "muted",
      text: `${item.num_tracklets} tracklet(s) · cameras: ${item.cameras.join(", ") || "none"}`,
    }),
    element("p", { className: "muted", text: seen }),
    ...tracklets,
    remove,
  ]);
}

async function loadGallery() {
  gallery.loads += 1;
  const load = gallery.loads;
  const query = new URLSearchParams({ offset: gallery.offset, limit: PAGE_SIZE });
  if (gallery.contains) query.set("contains", gallery.contains);
  const page = await api(`/identities?${query}`);
  const cards = await Promise.all(page.items.map(identityCard));
  if (load !== gallery.loads) return; // a later search or page asked since: it draws
  $("#identities").replaceChildren(...cards);
  $("#identities").dataset.contains = gallery.contains; // what the cards answer
  if (!cards.length) $("#identities").append(element("p", { className: "muted", text: "No identity." }));
  $("#gallery-total").textContent = `${page.total} identities`;
  const last = Math.min(page.offset + page.items.length, page.total);
  $("#page-label").textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "";
  $("#previous-page").disabled = page.offset === 0;
  $("#next-page").disabled = last >= page.total;
}

function page(step) {
  gallery.offset = Math.max(0, gallery.offset + step * PAGE_SIZE);
  loadGallery().catch(failed);
}

// ---------------------------------------------------------------------------------- start

function start() {
  $("#api-key").value = apiKey();
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setApiKey($("#api-key").value.trim());
    say("Key set for this tab.", "info");
  });
  $("#forget-key").addEventListener("click", () => {
    setApiKey("");
    $("#api-key").value = "";
    say("Key forgotten.", "info");
  });
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => show(button.dataset.view));
  }
  $("#query-form").addEventListener("submit", runQuery);
  $("#enroll-form").addEventListener("submit", runEnroll);
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    gallery.contains = $("#name-search").value.trim();
    gallery.offset = 0;
    loadGallery().catch(failed);
  });
  $("#previous-page").addEventListener("click", () => page(-1));
  $("#next-page").addEventListener("click", () => page(1));
  refreshStatus();
}

start();
