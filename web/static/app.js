// vizdex search page: plain JS over the /v1 API, no build step, no third-party code.
"use strict";

(() => {
  const KEY_STORE = "vizdex.apiKey"; // sessionStorage only: gone when the tab closes
  const PAGE_SIZE = 24;
  const GROUP_PAGE = 20;
  const POLL_MS = 300;
  const $ = (id) => document.getElementById(id);

  const state = {
    collection: "",
    query: null, // the last search body without k/offset, reused by "load more"
    label: "", // how the results are described ("for “a dog”", "like photo.jpg")
    offset: 0,
    exhausted: true,
    loading: false,
    blobUrls: [], // object URLs for images fetched with a key; revoked on the next search
    dupBlobUrls: [], // the same for the duplicate groups' thumbnails; revoked on the next scan
    detailHit: null,
    pending: null, // an action to retry once a key has been given
    dups: null, // the duplicate scan being shown: {collection, threshold, page, offset, done}
    confirmAction: null, // what "Delete" in the confirmation dialog does
  };

  // ---- messages -------------------------------------------------------------------------

  function showMessage(text, kind = "error") {
    $("message-text").textContent = text;
    $("message").className = "message " + kind;
    $("message").hidden = false;
  }

  function clearMessage() {
    $("message").hidden = true;
    $("message-text").textContent = "";
  }

  // What the API's {status_code, code, detail} means for someone who is not reading the docs.
  function explain(status, body, action) {
    const detail = body && typeof body.detail === "string" ? body.detail : "";
    const prefix = action ? `Could not ${action}: ` : "";
    switch (status) {
      case 0: return `${prefix}the vizdex server could not be reached; check that it is running, then try again.`;
      case 401: return `${prefix}this server needs a valid API key; enter one below.`;
      case 403: return `${prefix}${detail || "this API key is not allowed to do that"}.`;
      case 404: return `${prefix}${detail || "it was not found"}. It may have been deleted; try Refresh.`;
      case 409: return `${prefix}${detail || "it already exists"}.`;
      case 413: return `${prefix}the file or request is too large. ${detail}`;
      case 415: return `${prefix}that file type is not supported. ${detail}`;
      case 422: case 400: return `${prefix}${detail || "the request was not accepted"}.`;
      case 429: case 503: return `${prefix}the server is busy right now; try again in a moment. ${detail}`;
      default: return `${prefix}the server had a problem (${status}). ${detail}`;
    }
  }

  class ApiError extends Error {
    constructor(status, body, action) {
      super(explain(status, body, action));
      this.status = status;
      this.body = body;
    }
  }

  // ---- API ------------------------------------------------------------------------------

  function authHeaders() {
    const key = sessionStorage.getItem(KEY_STORE);
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  async function readBody(response) {
    const text = await response.text();
    try { return text ? JSON.parse(text) : null; } catch { return { detail: text.slice(0, 200) }; }
  }

  async function api(method, path, body, action) {
    const init = { method, headers: { ...authHeaders() } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, null, action);
    }
    const data = await readBody(response);
    if (!response.ok) throw new ApiError(response.status, data, action);
    return data;
  }

  // Runs an action; a 401 asks for a key and retries the action once one is given.
  async function guarded(action) {
    try {
      clearMessage();
      await action();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        state.pending = action;
        askForKey(error.message);
      } else {
        showMessage(error instanceof Error ? error.message : String(error));
      }
    }
  }

  function askForKey(why) {
    const hadKey = Boolean(sessionStorage.getItem(KEY_STORE));
    $("key-panel").hidden = false;
    showMessage(hadKey ? "That API key was not accepted. " + why : why, "warning");
    $("key-input").focus();
  }

  // Images behind a key cannot be <img src>'d (no header), so they are fetched as blobs.
  async function showImage(img, url, kept = state.blobUrls) {
    if (!sessionStorage.getItem(KEY_STORE)) {
      img.src = url;
      return url;
    }
    try {
      const response = await fetch(url, { headers: authHeaders() });
      if (!response.ok) throw new Error(String(response.status));
      const objectUrl = URL.createObjectURL(await response.blob());
      kept.push(objectUrl);
      img.src = objectUrl;
      return objectUrl;
    } catch {
      img.alt = `${img.alt} (could not be loaded)`;
      return null;
    }
  }

  // ---- collections ----------------------------------------------------------------------

  async function loadCollections(select) {
    const data = await api("GET", "/v1/collections", undefined, "list the collections");
    const choice = $("collection-select");
    const wanted = select || state.collection || localStorage.getItem("vizdex.collection") || "";
    choice.replaceChildren();
    if (!data.collections.length) {
      choice.append(new Option("(no collections yet)", ""));
    }
    for (const item of data.collections) {
      choice.append(new Option(item.name, item.name));
    }
    const names = data.collections.map((item) => item.name);
    choice.value = names.includes(wanted) ? wanted : (names[0] || "");
    state.collection = choice.value;
    if (choice.value) localStorage.setItem("vizdex.collection", choice.value); // a name, not a secret
    describeCollection(data.collections.find((item) => item.name === choice.value));
  }

  function describeCollection(item) {
    const info = $("collection-info");
    if (!item) {
      info.textContent = "Create a collection to start adding images.";
      return;
    }
    const count = item.image_count === 1 ? "1 image" : `${item.image_count} images`;
    info.textContent = `${item.name}: ${count}, embedded with ${item.models.join(", ")}.`;
  }

  async function refreshCurrent() {
    if (!state.collection) return;
    const item = await api("GET", `/v1/collections/${encodeURIComponent(state.collection)}`,
      undefined, "read the collection");
    describeCollection(item);
  }

  async function createCollection(name) {
    await api("POST", "/v1/collections", { name }, `create the collection “${name}”`);
    $("create-name").value = "";
    await loadCollections(name);
    showMessage(`Created the collection “${name}”.`, "info");
  }

  // ---- upload ---------------------------------------------------------------------------

  function setProgress(percent, text) {
    const bar = $("upload-progress");
    bar.hidden = false;
    bar.value = Math.max(0, Math.min(100, percent));
    bar.setAttribute("aria-valuetext", text);
    $("upload-status").textContent = text;
  }

  // XHR rather than fetch: it reports upload progress for large batches.
  function postFiles(path, files) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      for (const file of files) form.append("images", file, file.webkitRelativePath || file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", path);
      for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) {
          setProgress(50 * event.loaded / event.total, `Sending ${files.length} file(s)…`);
        }
      };
      xhr.onerror = () => reject(new ApiError(0, null, "upload the images"));
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch { body = { detail: xhr.responseText } }
        if (xhr.status >= 200 && xhr.status < 300) resolve({ status: xhr.status, body });
        else reject(new ApiError(xhr.status, body, "upload the images"));
      };
      xhr.send(form);
    });
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function followJob(url) {
    for (;;) {
      const job = await api("GET", url, undefined, "follow the upload's progress");
      const handled = job.done + job.skipped + job.failed;
      setProgress(50 + 50 * job.progress,
        `Indexing: ${handled} of ${job.total || "?"} handled (${job.state})`);
      if (["done", "failed", "cancelled"].includes(job.state)) return job;
      await sleep(POLL_MS);
    }
  }

  function summarize(indexed, duplicates, failures, jobError) {
    const box = $("upload-summary");
    box.replaceChildren();
    const line = document.createElement("p");
    line.className = "summary";
    line.textContent = `${indexed} indexed, ${duplicates} skipped as duplicates, `
      + `${failures.length} refused.`;
    box.append(line);
    if (jobError) {
      const p = document.createElement("p");
      p.textContent = `The upload stopped: ${jobError}`;
      box.append(p);
    }
    if (failures.length) {
      const list = document.createElement("ul");
      list.className = "failures";
      for (const failure of failures) {
        const li = document.createElement("li");
        li.textContent = `${failure.name}: ${failure.reason}`;
        list.append(li);
      }
      box.append(list);
    }
  }

  async function upload(files) {
    const images = files.filter((file) => file.type.startsWith("image/") || !file.type);
    if (!state.collection) {
      showMessage("Create or choose a collection first, then add images.");
      return;
    }
    if (!images.length) {
      showMessage("None of those files look like images.");
      return;
    }
    $("upload-summary").replaceChildren();
    setProgress(0, `Sending ${images.length} file(s)…`);
    try {
      const path = `/v1/collections/${encodeURIComponent(state.collection)}/images`;
      const { status, body } = await postFiles(path, images);
      if (status === 202) {
        const job = await followJob(body.job_url);
        const failures = job.failures.map((f) => ({ name: f.item, reason: f.message }));
        summarize(job.done, job.skipped, failures, job.error);
      } else {
        const failures = (body.results || []).filter((r) => r.status === "failed")
          .map((r) => ({ name: r.name || `file ${r.index + 1}`, reason: r.detail || r.code }));
        summarize(body.indexed, body.duplicates, failures, null);
      }
      setProgress(100, "Upload finished.");
      await refreshCurrent();
    } catch (error) {
      setProgress(0, "Upload did not finish.");
      throw error;
    }
  }

  // A dropped folder arrives as entries; walk it so its images upload like chosen files.
  async function filesFromDrop(dataTransfer) {
    const entries = [...(dataTransfer.items || [])]
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
    if (!entries.some((entry) => entry && entry.isDirectory)) return [...dataTransfer.files];
    const files = [];
    const walk = async (entry) => {
      if (!entry) return;
      if (entry.isFile) {
        files.push(await new Promise((resolve, reject) => entry.file(resolve, reject)));
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
          if (!batch.length) break;
          for (const child of batch) await walk(child);
        }
      }
    };
    for (const entry of entries) await walk(entry);
    return files;
  }

  // ---- search ---------------------------------------------------------------------------

  async function search(query, label) {
    if (!state.collection) {
      showMessage("Create or choose a collection first, then search it.");
      return;
    }
    for (const url of state.blobUrls) URL.revokeObjectURL(url);
    state.blobUrls = [];
    state.query = query;
    state.label = label;
    state.offset = 0;
    state.exhausted = false;
    $("grid").replaceChildren();
    $("results-status").textContent = `Searching ${label}…`;
    await loadMore();
  }

  async function loadMore() {
    if (state.loading || state.exhausted || !state.query) return;
    state.loading = true;
    $("grid").setAttribute("aria-busy", "true");
    try {
      const path = `/v1/collections/${encodeURIComponent(state.collection)}/search`;
      const body = { ...state.query, k: PAGE_SIZE, offset: state.offset };
      const data = await api("POST", path, body, "search");
      for (const hit of data.hits) $("grid").append(card(hit));
      state.offset += data.hits.length;
      state.exhausted = data.hits.length < PAGE_SIZE;
      const shown = state.offset;
      $("results-status").textContent = shown
        ? `${shown} result${shown === 1 ? "" : "s"} ${state.label}.`
        : `No images match ${state.label}.`;
    } catch (error) {
      state.exhausted = true;
      $("results-status").textContent = "The search did not finish.";
      throw error;
    } finally {
      state.loading = false;
      $("grid").removeAttribute("aria-busy");
      $("load-more").hidden = state.exhausted;
    }
  }

  function imageName(hit) {
    return hit.original_name || `image ${hit.id}`;
  }

  function card(hit) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "hit";
    button.dataset.id = String(hit.id);
    const img = document.createElement("img");
    img.alt = imageName(hit);
    img.loading = "lazy";
    img.width = 160;
    img.height = 160;
    showImage(img, hit.thumbnail_url);
    const caption = document.createElement("span");
    caption.className = "caption";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = imageName(hit);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `score ${hit.score.toFixed(3)}`;
    caption.append(name, score);
    button.append(img, caption);
    button.addEventListener("click", () => openDetail(hit));
    li.append(button);
    return li;
  }

  function readAsDataUrl(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error(`Could not read “${file.name}”.`));
      reader.readAsDataURL(file);
    });
  }

  async function searchByImage(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) {
      showMessage(`“${file.name || "That file"}” is not an image; choose a photo to search with.`);
      return;
    }
    const dataUrl = await readAsDataUrl(file);
    const preview = $("query-preview");
    preview.src = dataUrl;
    preview.alt = `Query image: ${file.name || "pasted image"}`;
    preview.hidden = false;
    await search({ image: dataUrl }, `like ${file.name || "the pasted image"}`);
  }

  // ---- detail ---------------------------------------------------------------------------

  function openDetail(hit) {
    state.detailHit = hit;
    $("detail-title").textContent = imageName(hit);
    const img = $("detail-image");
    img.alt = imageName(hit);
    img.removeAttribute("src");
    const link = $("detail-open");
    link.href = hit.file_url;
    showImage(img, hit.file_url).then((url) => { if (url) link.href = url; });
    const facts = $("detail-facts");
    facts.replaceChildren();
    const rows = [
      ["Score", hit.score.toFixed(4)],
      ["Size", `${hit.width} × ${hit.height} ${hit.format}`],
      ["Id", String(hit.id)],
      ...Object.entries(hit.metadata || {}).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]),
    ];
    for (const [term, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      facts.append(dt, dd);
    }
    $("detail").showModal();
    $("more-like-this").focus();
  }


  // ---- duplicates -----------------------------------------------------------------------

  // Reviewed groups are remembered per collection in this browser (a group's key changes when
  // its images do, so a changed group shows up as new).
  function reviewedKeys(collection) {
    try {
      return new Set(JSON.parse(localStorage.getItem(`vizdex.reviewed.${collection}`) || "[]"));
    } catch { return new Set(); }
  }

  function setReviewed(collection, key, reviewed) {
    const keys = reviewedKeys(collection);
    if (reviewed) keys.add(key); else keys.delete(key);
    localStorage.setItem(`vizdex.reviewed.${collection}`, JSON.stringify([...keys]));
  }

  function dupsProgress(percent, text) {
    const bar = $("dups-progress");
    bar.hidden = percent === null;
    if (percent !== null) bar.value = percent;
    $("dups-status").textContent = text;
  }

  async function findDuplicates(threshold) {
    if (!state.collection) {
      showMessage("Create or choose a collection first, then look for duplicates.");
      return;
    }
    const collection = state.collection;
    for (const url of state.dupBlobUrls) URL.revokeObjectURL(url);
    state.dupBlobUrls = [];
    $("dups-groups").replaceChildren();
    $("dups-more").hidden = true;
    dupsProgress(0, "Looking for near-copies…");
    const path = `/v1/collections/${encodeURIComponent(collection)}/duplicates`;
    const init = { method: "POST", headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ threshold, limit: GROUP_PAGE }) };
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, null, "look for duplicates");
    }
    const body = await readBody(response);
    if (!response.ok) {
      dupsProgress(null, "The search for duplicates did not finish.");
      throw new ApiError(response.status, body, "look for duplicates");
    }
    let page = body;
    let resultUrl = null;
    if (response.status === 202) { // a large collection: a job, then its result in pages
      resultUrl = body.result_url;
      for (;;) {
        const job = await api("GET", body.job_url, undefined, "follow the duplicate scan");
        dupsProgress(100 * job.progress, `Scanning: ${job.done} of ${job.total || "?"} images`);
        if (job.state === "done") break;
        if (["failed", "cancelled"].includes(job.state)) {
          dupsProgress(null, "The search for duplicates did not finish.");
          throw new Error(`The duplicate scan stopped: ${job.error || job.state}.`);
        }
        await sleep(POLL_MS);
      }
      page = await api("GET", `${resultUrl}?limit=${GROUP_PAGE}`, undefined, "read the duplicates");
    }
    state.dups = { collection, threshold, resultUrl, offset: 0, total: page.total_groups };
    showGroups(page);
  }

  async function moreGroups() {
    const dups = state.dups;
    if (!dups) return;
    const offset = dups.offset;
    const page = dups.resultUrl
      ? await api("GET", `${dups.resultUrl}?offset=${offset}&limit=${GROUP_PAGE}`, undefined,
        "read more duplicates")
      : await api("POST", `/v1/collections/${encodeURIComponent(dups.collection)}/duplicates`,
        { threshold: dups.threshold, offset, limit: GROUP_PAGE }, "read more duplicates");
    showGroups(page);
  }

  function showGroups(page) {
    const dups = state.dups;
    const reviewed = reviewedKeys(dups.collection);
    for (const group of page.groups) $("dups-groups").append(groupRow(group, reviewed));
    dups.offset = page.next_offset ?? (page.offset + page.groups.length);
    $("dups-more").hidden = page.next_offset === null;
    const groups = page.total_groups;
    dupsProgress(null, groups
      ? `${groups} group${groups === 1 ? "" : "s"} of near-copies (${page.total_images} images) `
        + `at similarity ${page.threshold} with ${page.model}.`
      : `No near-copies at similarity ${page.threshold}: every image is its own.`);
  }

  function sizeText(bytes) {
    return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1e3))} kB`;
  }

  function groupRow(group, reviewed) {
    const li = document.createElement("li");
    li.className = "dup-group";
    li.dataset.key = group.key;
    const keeper = group.images.find((image) => image.keeper);
    const head = document.createElement("div");
    head.className = "dup-head";
    const title = document.createElement("h3");
    title.textContent = `${group.size} copies of ${imageName(keeper)}`;
    const review = document.createElement("button");
    review.type = "button";
    review.className = "secondary review";
    const mark = (on) => {
      li.classList.toggle("reviewed", on);
      review.setAttribute("aria-pressed", String(on));
      review.textContent = on ? "Reviewed" : "Mark reviewed";
    };
    mark(reviewed.has(group.key));
    review.addEventListener("click", () => {
      const on = review.getAttribute("aria-pressed") !== "true";
      setReviewed(state.dups.collection, group.key, on);
      mark(on);
    });
    const copies = group.images.filter((image) => !image.keeper);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "danger";
    remove.textContent = `Delete ${copies.length} ${copies.length === 1 ? "copy" : "copies"}…`;
    remove.addEventListener("click", () => confirmDelete(li, keeper, copies));
    head.append(title, review, remove);
    const list = document.createElement("ul");
    list.className = "dup-images";
    for (const image of group.images) list.append(imageTile(image));
    li.append(head, list);
    return li;
  }

  function imageTile(image) {
    const li = document.createElement("li");
    li.className = image.keeper ? "dup-image keeper" : "dup-image";
    li.dataset.id = String(image.id);
    if (image.keeper) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "Keeper";
      li.append(badge);
    }
    const img = document.createElement("img");
    img.alt = imageName(image);
    img.loading = "lazy";
    img.width = 160;
    img.height = 160;
    showImage(img, image.thumbnail_url, state.dupBlobUrls);
    const caption = document.createElement("span");
    caption.className = "caption";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = imageName(image);
    const facts = document.createElement("span");
    facts.className = "score";
    facts.textContent = `${image.width} × ${image.height} ${image.format}, ${sizeText(image.byte_size)}, `
      + `similarity ${image.similarity.toFixed(3)}`;
    caption.append(name, facts);
    const actions = document.createElement("div");
    actions.className = "row";
    const asHit = { ...image, score: image.similarity };
    const open = document.createElement("button");
    open.type = "button";
    open.className = "secondary";
    open.textContent = "Open";
    open.setAttribute("aria-label", `Open ${imageName(image)}`);
    open.addEventListener("click", () => openDetail(asHit));
    const like = document.createElement("button");
    like.type = "button";
    like.className = "secondary";
    like.textContent = "More like this";
    like.setAttribute("aria-label", `More like ${imageName(image)}`);
    like.addEventListener("click", () => guarded(async () => {
      $("results").scrollIntoView();
      await search({ image_id: image.id }, `like ${imageName(image)}`);
    }));
    actions.append(open, like);
    li.append(img, caption, actions);
    return li;
  }

  function confirmDelete(row, keeper, copies) {
    const names = copies.map(imageName).join(", ");
    $("dups-confirm-text").textContent = `Delete ${copies.length} `
      + `${copies.length === 1 ? "copy" : "copies"} of “${imageName(keeper)}” (${names})? `
      + `The keeper stays. Deleted images cannot be brought back.`;
    state.confirmAction = async () => {
      const collection = encodeURIComponent(state.dups.collection);
      for (const image of copies) {
        await api("DELETE", `/v1/collections/${collection}/images/${image.id}`, undefined,
          `delete “${imageName(image)}”`);
        row.querySelector(`.dup-image[data-id="${image.id}"]`)?.remove();
      }
      row.querySelector(".danger").remove();
      row.querySelector("h3").textContent = `${imageName(keeper)}: copies deleted`;
      showMessage(`Deleted ${copies.length} ${copies.length === 1 ? "copy" : "copies"}; `
        + `kept “${imageName(keeper)}”.`, "info");
      await refreshCurrent();
    };
    $("dups-confirm").showModal();
    $("dups-confirm-cancel").focus();
  }

  // ---- wiring ---------------------------------------------------------------------------

  function dropZone(zone, onFiles) {
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      guarded(async () => onFiles(await filesFromDrop(event.dataTransfer)));
    });
  }

  function start() {
    $("message-close").addEventListener("click", clearMessage);
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      $("key-input").value = "";
      $("key-panel").hidden = true;
      $("forget-key").hidden = false;
      const retry = state.pending || (() => loadCollections());
      state.pending = null;
      guarded(retry);
    });
    $("forget-key").hidden = !sessionStorage.getItem(KEY_STORE);
    $("forget-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      $("forget-key").hidden = true;
      showMessage("The API key was forgotten.", "info");
    });

    $("collection-select").addEventListener("change", (event) => {
      state.collection = event.target.value;
      state.dups = null; // groups belong to the collection they were found in
      $("dups-groups").replaceChildren();
      $("dups-more").hidden = true;
      localStorage.setItem("vizdex.collection", state.collection);
      guarded(refreshCurrent);
    });
    $("collection-refresh").addEventListener("click", () => guarded(() => loadCollections()));
    $("create-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const name = $("create-name").value.trim();
      if (name) guarded(() => createCollection(name));
    });

    for (const id of ["upload-files", "upload-folder"]) {
      $(id).addEventListener("change", (event) => {
        const files = [...event.target.files];
        event.target.value = ""; // choosing the same files again still fires "change"
        guarded(() => upload(files));
      });
    }
    dropZone($("upload-drop"), (files) => upload(files));
    // A file dropped outside the zones would otherwise replace the page with the file.
    for (const type of ["dragover", "drop"]) {
      document.addEventListener(type, (event) => event.preventDefault());
    }

    $("text-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("text-query").value.trim();
      if (text) guarded(() => search({ text }, `for “${text}”`));
    });
    $("query-file").addEventListener("change", (event) => {
      const [file] = event.target.files;
      event.target.value = "";
      guarded(() => searchByImage(file));
    });
    dropZone($("query-drop"), (files) => searchByImage(files[0]));
    document.addEventListener("paste", (event) => {
      const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
      if (file) {
        event.preventDefault();
        guarded(() => searchByImage(file));
      }
    });

    $("load-more").addEventListener("click", () => guarded(loadMore));
    // Scrolling near the end loads the next page; the button stays for keyboards and old browsers.
    if ("IntersectionObserver" in window) {
      new IntersectionObserver((entries) => {
        const ready = state.offset && !state.exhausted && !state.loading;
        if (ready && entries.some((entry) => entry.isIntersecting)) guarded(loadMore);
      }).observe($("more-sentinel"));
    }

    $("dups-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const threshold = Number($("dups-threshold").value);
      guarded(() => findDuplicates(threshold));
    });
    $("dups-more").addEventListener("click", () => guarded(moreGroups));
    $("dups-confirm-cancel").addEventListener("click", () => {
      state.confirmAction = null;
      $("dups-confirm").close();
    });
    $("dups-confirm-delete").addEventListener("click", () => {
      const action = state.confirmAction;
      state.confirmAction = null;
      $("dups-confirm").close();
      if (action) guarded(action);
    });

    $("detail-close").addEventListener("click", () => $("detail").close());
    $("more-like-this").addEventListener("click", () => {
      const hit = state.detailHit;
      $("detail").close();
      if (hit) {
        guarded(() => search({ image_id: hit.id }, `like ${imageName(hit)}`));
      }
    });

    guarded(() => loadCollections());
  }

  start();
})();
