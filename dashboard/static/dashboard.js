/* The live dashboard page.
 *
 * Socket.IO `latest_data` (once a second) -> the model (a Map of devices with a short speed history)
 * -> one DOM update per animation frame. Every card's numbers and every table row are kept current; only
 * the speed charts wait until their card is (nearly) on screen, and say so until they are drawn. Past
 * `data-compact-after` devices the cards become compact tiles without charts.
 *
 * Every string that comes from a device goes into the page through textContent, never as HTML.
 */
(function () {
  "use strict";

  const body = document.body;
  const CONFIG = {
    offlineAfterS: Number(body.dataset.offlineAfterS) || 10,
    compactAfter: Number(body.dataset.compactAfter) || 50,
    loginEnabled: body.dataset.loginEnabled === "true",
    historyPoints: 60,
  };

  // Detection label (the driver-monitoring camera's) -> severity class. Labels not listed are "other";
  // the label itself never becomes a class name.
  const SEVERITY = new Map([
    ["normal", "ok"],
    ["distracted", "warning"],
    ["yawning", "warning"],
    ["smoking", "warning"],
    ["eyes_closed", "danger"],
    ["drowsy", "danger"],
    ["phone_usage", "danger"],
  ]);

  const $ = (id) => document.getElementById(id);
  const nodes = {
    cards: $("cards"),
    empty: $("empty"),
    tbody: document.querySelector("#device-table tbody"),
    tableWrap: document.querySelector(".table-wrap"),
    scrollHint: $("table-scroll-hint"),
    headers: Array.from(document.querySelectorAll("#device-table th[data-sort]")),
    connection: $("connection"),
    connectionText: $("connection-text"),
    banner: $("store-banner"),
    count: $("device-count"),
    online: $("stat-online"),
    rate: $("stat-rate"),
    p50: $("stat-p50"),
    p95: $("stat-p95"),
    window: $("stat-window"),
    updated: $("stat-updated"),
    viewButtons: Array.from(document.querySelectorAll(".view-toggle button")),
  };

  const devices = new Map(); // device_id -> entry (see newEntry)
  let payload = null;
  let frameRequested = false;
  let viewChoice = "auto";
  let view = null; // "cards" or "compact"
  let cardOrderDirty = false;
  const sort = { key: "device_id", type: "text", dir: 1 };
  let rowOrder = [];

  // Read by the tests and benchmarks: how often the page rendered and how long that took.
  const stats = { payloads: 0, renders: 0, renderMsTotal: 0, renderMsMax: 0, lastTick: 0, chartsDrawn: 0 };
  window.rtdsDashboard = { stats: stats };

  const timeFormat = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hour12: false,
  });
  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  // --- small DOM helpers --------------------------------------------------------------------

  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function setText(node, text) {
    if (node._text !== text) {
      node.textContent = text;
      node._text = text;
    }
  }

  function setClass(node, className) {
    if (node._class !== className) {
      node.className = className;
      node._class = className;
    }
  }

  function setWidth(node, percent) {
    const value = Math.max(0, Math.min(100, percent || 0)).toFixed(0) + "%";
    if (node._width !== value) {
      node.style.width = value;
      node._width = value;
    }
  }

  // --- formatting ---------------------------------------------------------------------------

  const dash = "–";
  const number1 = (value) => (value == null ? dash : value.toFixed(1));
  const percent = (value) => (value == null ? dash : Math.round(value) + "%");
  const clock = (seconds) => (seconds == null ? dash : timeFormat.format(new Date(seconds * 1000)));
  const milliseconds = (value) => (value == null ? dash : Math.round(value) + " ms");

  function ago(seconds) {
    if (seconds == null) return "never";
    if (seconds < 60) return Math.round(seconds) + " s ago";
    if (seconds < 3600) return Math.round(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.round(seconds / 3600) + " h ago";
    return Math.round(seconds / 86400) + " d ago";
  }

  function severity(label) {
    if (!label) return "none";
    return SEVERITY.get(String(label).toLowerCase()) || "other";
  }

  function detectionText(record) {
    return record.detection_label ? record.detection_label : "no detection";
  }

  // --- the model ----------------------------------------------------------------------------

  function newEntry(deviceId) {
    return {
      id: deviceId,
      record: null,
      lastTime: null,
      timeText: "",
      labels: [],
      speeds: [],
      card: null,
      row: null,
      chart: null,
      visible: false,
      chartDirty: true,
    };
  }

  function ingest(data) {
    payload = data;
    stats.payloads += 1;
    for (const record of data.devices || []) {
      let entry = devices.get(record.device_id);
      if (!entry) {
        entry = newEntry(record.device_id);
        devices.set(record.device_id, entry);
        cardOrderDirty = true;
      }
      entry.record = record;
      if (record.time !== entry.lastTime && record.speed != null) {
        entry.lastTime = record.time;
        entry.timeText = clock(record.time);
        entry.labels.push(entry.timeText);
        entry.speeds.push(record.speed);
        if (entry.speeds.length > CONFIG.historyPoints) {
          entry.labels.shift();
          entry.speeds.shift();
        }
        entry.chartDirty = true;
      }
    }
    requestRender();
  }

  function requestRender() {
    if (!frameRequested) {
      frameRequested = true;
      window.requestAnimationFrame(render);
    }
  }

  // --- cards --------------------------------------------------------------------------------

  function buildCard(entry) {
    const card = make("article", "card");
    card.dataset.deviceId = entry.id;

    const head = make("header", "card__head");
    const title = make("h3", "card__id", entry.id);
    title.title = entry.id;
    const status = make("span", "status status--offline");
    status.append(make("span", "dot"), make("span", "status__text", "offline"));
    head.append(title, status);

    const speed = make("div", "card__speed");
    const speedValue = make("span", "speed__value", dash);
    speed.append(speedValue, make("span", "speed__unit", "km/h"));

    const chartBox = make("div", "card__chart");
    chartBox.append(make("p", "chart__deferred", "Speed chart: drawn when the card is in view"));

    const detection = make("div", "card__detection");
    const badge = make("span", "badge badge--none", "no detection");
    const confidence = make("span", "confidence", "");
    detection.append(badge, confidence);

    const meters = make("div", "meters");
    const meterParts = {};
    for (const [key, name] of [["cpu_usage", "CPU"], ["ram_usage", "RAM"], ["disk_percent", "Disk"]]) {
      const meter = make("div", "meter");
      const track = make("div", "meter__track");
      const fill = make("div", "meter__fill");
      track.append(fill);
      const value = make("span", "meter__value", dash);
      meter.append(make("span", "meter__label", name), track, value);
      meters.append(meter);
      meterParts[key] = { fill: fill, value: value };
    }

    const seen = make("footer", "card__seen");
    const seenClock = make("span", "seen__clock", "");
    const seenAgo = make("span", "seen__ago", "");
    seen.append(seenClock, seenAgo);
    card.append(head, speed, chartBox, detection, meters, seen);
    entry.card = {
      root: card,
      status: status,
      statusText: status.lastChild,
      speed: speedValue,
      chartBox: chartBox,
      badge: badge,
      confidence: confidence,
      meters: meterParts,
      seenClock: seenClock,
      seenAgo: seenAgo,
    };
    visibility.observe(card);
  }

  function renderCard(entry) {
    const record = entry.record;
    const parts = entry.card;
    const online = Boolean(record.online);
    setClass(parts.root, "card" + (online ? "" : " card--offline"));
    setClass(parts.status, "status " + (online ? "status--online" : "status--offline"));
    setText(parts.statusText, online ? "online" : "offline");
    setText(parts.speed, number1(record.speed));
    setClass(parts.badge, "badge badge--" + severity(record.detection_label));
    setText(parts.badge, detectionText(record));
    setText(parts.confidence, record.detection_label && record.detection_confidence != null ? percent(record.detection_confidence * 100) : "");
    for (const key in parts.meters) {
      const meter = parts.meters[key];
      setWidth(meter.fill, record[key]);
      setText(meter.value, percent(record[key]));
    }
    setText(parts.seenClock, "Last seen " + (entry.timeText || clock(record.time)) + " · ");
    setText(parts.seenAgo, ago(record.seconds_since));
    if (view === "cards" && entry.visible && (entry.chartDirty || !entry.chart)) {
      drawChart(entry);
    }
  }

  function drawChart(entry) {
    if (typeof window.Chart !== "function") return;
    if (!entry.chart) {
      const canvas = make("canvas");
      canvas.setAttribute("aria-label", "Speed of the last minute");
      canvas.setAttribute("role", "img");
      entry.card.chartBox.replaceChildren(canvas); // the "drawn when in view" note goes
      entry.chart = new window.Chart(canvas, chartConfig());
    }
    entry.chart.data.labels = entry.labels.slice();
    entry.chart.data.datasets[0].data = entry.speeds.slice();
    entry.chart.update("none");
    entry.chartDirty = false;
    stats.chartsDrawn += 1;
  }

  function chartConfig() {
    return {
      type: "line",
      data: {
        labels: [],
        datasets: [
          {
            label: "Speed (km/h)",
            data: [],
            borderColor: "#2563eb",
            backgroundColor: "rgba(37, 99, 235, 0.12)",
            fill: true,
            borderWidth: 2,
            // No dots on a line, but a lone first reading still shows.
            pointRadius: (context) => (context.dataset.data.length === 1 ? 3 : 0),
            tension: 0.25,
          },
        ],
      },
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        events: [],
        plugins: { legend: { display: false }, tooltip: { enabled: false } },
        scales: {
          x: { ticks: { maxTicksLimit: 4, maxRotation: 0, font: { size: 10 }, color: "#64748b" }, grid: { display: false } },
          y: {
            min: 0,
            suggestedMax: 120,
            ticks: { maxTicksLimit: 4, font: { size: 10 }, color: "#64748b" },
            grid: { color: "rgba(100, 116, 139, 0.15)" },
          },
        },
      },
    };
  }

  function destroyCharts() {
    for (const entry of devices.values()) {
      if (entry.chart) {
        entry.chart.destroy();
        entry.chart = null;
        entry.card.chartBox.replaceChildren(make("p", "chart__deferred", "Speed chart: drawn when the card is in view"));
      }
      entry.chartDirty = true;
    }
  }

  const visibility = new IntersectionObserver(
    (changes) => {
      let newlyVisible = false;
      for (const change of changes) {
        const entry = devices.get(change.target.dataset.deviceId);
        if (!entry) continue;
        entry.visible = change.isIntersecting;
        newlyVisible = newlyVisible || change.isIntersecting;
      }
      if (newlyVisible) requestRender();
    },
    { rootMargin: "200px 0px" }
  );

  function sortedIds() {
    return Array.from(devices.keys()).sort(collator.compare);
  }

  function placeCards() {
    const fragment = document.createDocumentFragment();
    for (const id of sortedIds()) {
      const entry = devices.get(id);
      if (!entry.card) buildCard(entry);
      fragment.append(entry.card.root);
    }
    nodes.cards.append(fragment);
    cardOrderDirty = false;
  }

  function applyView() {
    const wanted = viewChoice === "auto" ? (devices.size > CONFIG.compactAfter ? "compact" : "cards") : viewChoice;
    if (wanted === view) return;
    view = wanted;
    nodes.cards.classList.toggle("cards--compact", view === "compact");
    if (view === "compact") destroyCharts();
    for (const button of nodes.viewButtons) {
      button.setAttribute("aria-pressed", String(button.dataset.view === viewChoice));
    }
  }

  // --- the table ----------------------------------------------------------------------------

  const COLUMNS = ["device_id", "online", "speed", "detection_label", "detection_confidence", "cpu_usage", "ram_usage", "disk_percent", "seconds_since"];

  function buildRow(entry) {
    const row = make("tr");
    const cells = {};
    for (const column of COLUMNS) {
      const numeric = ["speed", "detection_confidence", "cpu_usage", "ram_usage", "disk_percent", "seconds_since"].includes(column);
      const cell = make(column === "device_id" ? "th" : "td", numeric ? "num" : "");
      if (column === "device_id") cell.scope = "row";
      cells[column] = cell;
      row.append(cell);
    }
    const status = make("span", "status status--offline");
    status.append(make("span", "dot"), make("span", "status__text", "offline"));
    cells.online.append(status);
    cells.statusBadge = status;
    cells.statusText = status.lastChild;
    const badge = make("span", "badge badge--none", "");
    cells.detection_label.append(badge);
    cells.badge = badge;
    setText(cells.device_id, entry.id);
    row.dataset.deviceId = entry.id;
    entry.row = { root: row, cells: cells };
  }

  function renderRow(entry) {
    const record = entry.record;
    const cells = entry.row.cells;
    const online = Boolean(record.online);
    setClass(entry.row.root, online ? "" : "row--offline");
    setClass(cells.statusBadge, "status " + (online ? "status--online" : "status--offline"));
    setText(cells.statusText, online ? "online" : "offline");
    setText(cells.speed, number1(record.speed));
    setClass(cells.badge, "badge badge--" + severity(record.detection_label));
    setText(cells.badge, detectionText(record));
    setText(cells.detection_confidence, record.detection_label && record.detection_confidence != null ? percent(record.detection_confidence * 100) : dash);
    setText(cells.cpu_usage, percent(record.cpu_usage));
    setText(cells.ram_usage, percent(record.ram_usage));
    setText(cells.disk_percent, percent(record.disk_percent));
    setText(cells.seconds_since, ago(record.seconds_since));
  }

  function sortValue(entry) {
    if (sort.key === "device_id") return entry.id;
    const value = entry.record ? entry.record[sort.key] : null;
    if (sort.key === "online") return value ? 1 : 0;
    return value;
  }

  function compareEntries(a, b) {
    const left = sortValue(a);
    const right = sortValue(b);
    let result;
    if (left == null && right == null) result = 0;
    else if (left == null) return 1; // missing values last, whatever the direction
    else if (right == null) return -1;
    else if (sort.type === "text") result = collator.compare(String(left), String(right));
    else result = left - right;
    return result * sort.dir || collator.compare(a.id, b.id);
  }

  // Every row is kept current, on screen or not: a row is a few text nodes, and setText writes only what
  // changed, so even a thousand rows cost a millisecond or two per tick. Rows are reordered only when the
  // sorted order changed.
  function renderTable() {
    const entries = Array.from(devices.values());
    const added = document.createDocumentFragment();
    for (const entry of entries) {
      if (!entry.row) {
        buildRow(entry);
        added.append(entry.row.root);
      }
      if (entry.record) renderRow(entry);
    }
    nodes.tbody.append(added);
    entries.sort(compareEntries);
    const order = entries.map((entry) => entry.id);
    if (order.length !== rowOrder.length || order.some((id, index) => id !== rowOrder[index])) {
      const fragment = document.createDocumentFragment();
      for (const entry of entries) fragment.append(entry.row.root);
      nodes.tbody.append(fragment);
      rowOrder = order;
    }
  }

  // Whether the table is wider than its box is read after layout (a ResizeObserver), never inside a
  // render: reading scrollWidth there would force a layout of the whole page every tick.
  function updateScrollHint() {
    const wrap = nodes.tableWrap;
    const clipped = wrap.scrollWidth > wrap.clientWidth + 1;
    if (nodes.scrollHint.hidden === clipped) nodes.scrollHint.hidden = !clipped;
  }
  const tableSize = new ResizeObserver(updateScrollHint);
  tableSize.observe(nodes.tableWrap);
  tableSize.observe(document.querySelector("#device-table"));

  function onHeaderClick(event) {
    const header = event.currentTarget;
    const key = header.dataset.sort;
    sort.dir = sort.key === key ? -sort.dir : 1;
    sort.key = key;
    sort.type = header.dataset.type;
    for (const other of nodes.headers) {
      other.setAttribute("aria-sort", other === header ? (sort.dir > 0 ? "ascending" : "descending") : "none");
    }
    rowOrder = [];
    requestRender();
  }

  // --- summary and connection --------------------------------------------------------------

  function renderSummary() {
    const summary = payload.summary || {};
    setText(nodes.online, (summary.online ?? 0) + " / " + (summary.devices ?? 0));
    setText(nodes.rate, summary.messages_per_s == null ? dash : summary.messages_per_s.toFixed(1));
    setText(nodes.p50, milliseconds(summary.latency_p50_ms));
    setText(nodes.p95, milliseconds(summary.latency_p95_ms));
    setText(nodes.window, summary.window_s ? "last " + Math.round(summary.window_s) + " s" : dash);
    setText(nodes.updated, clock(payload.time));
    setText(nodes.count, devices.size ? "(" + devices.size + ")" : "");
    const store = payload.store || { ok: true };
    nodes.banner.hidden = Boolean(store.ok);
    if (!store.ok) setText(nodes.banner, "The dashboard cannot read the store: " + (store.detail || "unknown error") + ". Showing the last data it had.");
  }

  let socketConnected = false;

  function setConnection(state, text) {
    setClass(nodes.connection, "connection connection--" + state);
    setText(nodes.connectionText, text);
    body.dataset.connection = state;
  }

  // Connected is not the same as live: the header says whether any vehicle is reporting.
  function renderConnection() {
    if (!socketConnected) return;
    const summary = payload.summary || {};
    const store = payload.store || { ok: true };
    if (!store.ok) setConnection("stale", "Connected · the store does not answer");
    else if (!devices.size) setConnection("stale", "Connected · waiting for data");
    else if (!summary.online) setConnection("stale", "Connected · no vehicle online");
    else setConnection("connected", "Live · " + summary.online + " of " + (summary.devices ?? devices.size) + " online");
  }

  // --- one frame ----------------------------------------------------------------------------

  function render() {
    frameRequested = false;
    if (!payload) return;
    const started = performance.now();
    applyView();
    if (cardOrderDirty) placeCards();
    nodes.empty.hidden = devices.size > 0;
    renderSummary();
    renderConnection();
    for (const entry of devices.values()) {
      if (entry.record) renderCard(entry);
    }
    renderTable();
    const elapsed = performance.now() - started;
    stats.renders += 1;
    stats.renderMsTotal += elapsed;
    stats.renderMsMax = Math.max(stats.renderMsMax, elapsed);
    stats.lastTick = payload.tick;
    body.dataset.tick = String(payload.tick);
    body.dataset.view = view;
  }

  // --- wiring -------------------------------------------------------------------------------

  for (const header of nodes.headers) {
    header.addEventListener("click", onHeaderClick);
    header.tabIndex = 0;
    header.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onHeaderClick(event);
      }
    });
  }
  for (const button of nodes.viewButtons) {
    button.addEventListener("click", () => {
      viewChoice = button.dataset.view;
      view = null;
      requestRender();
    });
  }

  if (typeof window.io !== "function") {
    setConnection("error", "Socket.IO client failed to load");
    return;
  }
  const socket = window.io({ reconnectionDelayMax: 10000 });
  socket.on("connect", () => {
    socketConnected = true;
    setConnection("connected", "Connected");
    if (payload) requestRender();
  });
  socket.on("disconnect", (reason) => {
    socketConnected = false;
    setConnection("disconnected", reason === "io client disconnect" ? "Disconnected" : "Connection lost, reconnecting…");
  });
  socket.io.on("reconnect_attempt", (attempt) => setConnection("connecting", "Reconnecting (attempt " + attempt + ")…"));
  socket.on("connect_error", (error) => {
    if (socket.active) {
      setConnection("disconnected", "Cannot reach the server, retrying…");
      return;
    }
    setConnection("error", "Refused by the server: " + (error && error.message ? error.message : "unknown reason"));
    if (CONFIG.loginEnabled) window.setTimeout(() => window.location.assign("/login"), 3000);
  });
  socket.on("latest_data", ingest);
})();
