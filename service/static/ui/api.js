// Talking to the service: the API key, JSON and error answers, thumbnails as blob URLs.
// The key lives in this tab's sessionStorage only (the server never stores it) and goes out
// in the X-API-Key header, which is why images are fetched rather than linked.

const KEY_STORE = "reid-api-key";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORE, key);
  else sessionStorage.removeItem(KEY_STORE);
  thumbnails.clear();
}

async function errorOf(response) {
  try {
    const { error } = await response.json();
    return new ApiError(response.status, error.code, error.message);
  } catch {
    return new ApiError(response.status, `http_${response.status}`, response.statusText);
  }
}

// fetch() with the key; answers the parsed JSON (or a Blob), throws ApiError otherwise.
export async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, { method, body, headers });
  if (!response.ok) throw await errorOf(response);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.blob();
}

const thumbnails = new Map();

// A blob: URL for a thumbnail's API url, fetched once per page (a tracklet's thumbnails never
// change: its id is never reused).
export function thumbnailUrl(url) {
  if (!thumbnails.has(url)) {
    const loading = api(url).then((blob) => URL.createObjectURL(blob));
    loading.catch(() => thumbnails.delete(url));
    thumbnails.set(url, loading);
  }
  return thumbnails.get(url);
}

// An ISO time in UTC from a datetime-local input (the page labels them UTC), or "".
export function utcTime(value) {
  return value ? `${value.length === 16 ? `${value}:00` : value}Z` : "";
}

export function formatTime(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, " UTC") : "";
}

// The frames field of a form (several images, or one zip): the multipart body it becomes.
export function framesBody(form, fields) {
  const body = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value !== "" && value !== null && value !== undefined) body.append(name, value);
  }
  const frames = [...form.elements.frames.files];
  const archive = form.elements.archive.files[0];
  if (frames.length && archive) throw new ApiError(0, "bad_request", "choose frames or a zip, not both");
  if (!frames.length && !archive) throw new ApiError(0, "no_frames", "choose the frames or a zip of them");
  for (const file of frames) body.append("frames", file, file.name);
  if (archive) body.append("archive", archive, archive.name);
  return body;
}
