// The images of a zip archive in the order the service reads them (entry names, numbers
// compared as numbers), so the page can show the frames of a zipped query next to their
// attention weights. Stored and deflated entries; the browser inflates (DecompressionStream).

const END_OF_DIRECTORY = 0x06054b50;
const DIRECTORY_ENTRY = 0x02014b50;
const LOCAL_HEADER = 0x04034b50;

// The service's natural_key: "frame2" before "frame10", letters case-insensitively.
export function naturalCompare(a, b) {
  const split = (name) => name.toLowerCase().split(/(\d+)/).filter((part) => part !== "");
  const x = split(a);
  const y = split(b);
  for (let i = 0; i < Math.min(x.length, y.length); i += 1) {
    const xNumber = /^\d+$/.test(x[i]);
    const yNumber = /^\d+$/.test(y[i]);
    if (xNumber !== yNumber) return xNumber ? -1 : 1;
    const order = xNumber ? Number(x[i]) - Number(y[i]) : x[i] < y[i] ? -1 : x[i] > y[i] ? 1 : 0;
    if (order !== 0) return order;
  }
  return x.length - y.length;
}

function ignored(name) {
  const parts = name.replace(/\\/g, "/").split("/");
  return name.endsWith("/") || parts[0] === "__MACOSX" || parts[parts.length - 1].startsWith(".");
}

function directoryOffset(view) {
  for (let at = view.byteLength - 22; at >= Math.max(0, view.byteLength - 65557); at -= 1) {
    if (view.getUint32(at, true) === END_OF_DIRECTORY) {
      return { count: view.getUint16(at + 10, true), offset: view.getUint32(at + 16, true) };
    }
  }
  throw new Error("not a zip archive");
}

function entries(buffer) {
  const view = new DataView(buffer);
  const { count, offset } = directoryOffset(view);
  const found = [];
  let at = offset;
  for (let i = 0; i < count; i += 1) {
    if (view.getUint32(at, true) !== DIRECTORY_ENTRY) throw new Error("damaged zip directory");
    const nameLength = view.getUint16(at + 28, true);
    const skip = nameLength + view.getUint16(at + 30, true) + view.getUint16(at + 32, true);
    found.push({
      method: view.getUint16(at + 10, true),
      size: view.getUint32(at + 20, true),
      local: view.getUint32(at + 42, true),
      name: new TextDecoder().decode(new Uint8Array(buffer, at + 46, nameLength)),
    });
    at += 46 + skip;
  }
  return found;
}

async function contents(buffer, entry) {
  const view = new DataView(buffer);
  if (view.getUint32(entry.local, true) !== LOCAL_HEADER) throw new Error("damaged zip entry");
  const start = entry.local + 30 + view.getUint16(entry.local + 26, true)
    + view.getUint16(entry.local + 28, true);
  const raw = new Blob([buffer.slice(start, start + entry.size)]);
  if (entry.method === 0) return raw;
  if (entry.method !== 8) throw new Error(`zip method ${entry.method} is not supported`);
  const inflated = raw.stream().pipeThrough(new DecompressionStream("deflate-raw"));
  return new Response(inflated).blob();
}

// [{name, blob}] of the archive's frames, in the service's order.
export async function zipFrames(file) {
  const buffer = await file.arrayBuffer();
  const kept = entries(buffer).filter((entry) => !ignored(entry.name));
  kept.sort((a, b) => naturalCompare(a.name, b.name));
  return Promise.all(kept.map(async (entry) => ({ name: entry.name, blob: await contents(buffer, entry) })));
}
