// The status page's live updates: /ws says something changed, the page fetches its live part and swaps it in.
// Vanilla ES2017, no dependencies. The fragment is HTML the server escaped; the CSP forbids inline script and
// handlers, so importing its nodes runs nothing. Without this script the page is complete and says to reload.
(function () {
  'use strict';

  var DEBOUNCE_MS = 250; // one fetch for a burst of events
  // At most one fetch a second per open page: in a storm every event would otherwise make each viewer re-render
  // the page on the relay that is delivering the storm.
  var MIN_INTERVAL_MS = 1000;
  var lastFetchAt = 0;
  var TICK_MS = 30000; // refresh anyway, so "firing for" durations move
  var BACKOFF_FIRST_MS = 1000;
  var BACKOFF_MAX_MS = 30000;

  var TITLE = 'rocketchat-webhook status'; // as status.html writes it, after the firing count

  var body = document.body;
  var fragmentUrl = body.dataset.fragmentUrl;
  var indicator = document.getElementById('live-indicator');
  var refreshes = 0;
  var debounceTimer = null;
  var inFlight = false;
  var againAfter = false; // an event arrived during a fetch: fetch once more when it ends
  var backoffMs = BACKOFF_FIRST_MS;
  var socketOpen = false;

  function showState(state, text) {
    body.dataset.liveState = state;
    if (indicator) {
      indicator.textContent = text;
      indicator.className = 'indicator indicator-' + state;
    }
  }

  function websocketUrl() {
    var url = new URL(body.dataset.wsPath || '/ws', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return url.href;
  }

  // What the swap would lose: open <details>, horizontal scroll of tables, the focused element.
  function rememberState(live) {
    var state = {open: [], scroll: [], focus: null, x: window.scrollX, y: window.scrollY};
    live.querySelectorAll('details[data-key]').forEach(function (node) {
      if (node.open) { state.open.push(node.dataset.key); }
    });
    live.querySelectorAll('.table-wrap[data-key]').forEach(function (node) {
      state.scroll.push([node.dataset.key, node.scrollLeft]);
    });
    var active = document.activeElement;
    if (active && live.contains(active)) {
      var keyed = active.closest('[data-key]');
      if (keyed) { state.focus = keyed.dataset.key; }
    }
    return state;
  }

  function byKey(root, selector, key) {
    var nodes = root.querySelectorAll(selector);
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].dataset.key === key) { return nodes[i]; }
    }
    return null;
  }

  function restoreState(live, state) {
    state.open.forEach(function (key) {
      var node = byKey(live, 'details[data-key]', key);
      if (node) { node.open = true; }
    });
    state.scroll.forEach(function (pair) {
      var node = byKey(live, '.table-wrap[data-key]', pair[0]);
      if (node) { node.scrollLeft = pair[1]; }
    });
    if (state.focus) {
      var keyed = byKey(live, '[data-key]', state.focus);
      var target = keyed && (keyed.matches('details') ? keyed.querySelector('summary') : keyed);
      if (target && target.focus) { target.focus({preventScroll: true}); }
    }
    window.scrollTo(state.x, state.y);
  }

  function apply(html) {
    var parsed = new DOMParser().parseFromString(html, 'text/html');
    var fresh = parsed.getElementById('live');
    var current = document.getElementById('live');
    if (!fresh || !current) { throw new Error('no live part in the answer'); }
    var state = rememberState(current);
    var imported = document.importNode(fresh, true);
    current.replaceWith(imported);
    restoreState(imported, state);
    var firing = Number(imported.dataset.firing) || 0;
    document.title = (firing ? '(' + firing + ') ' : '') + TITLE;
    refreshes += 1;
    body.dataset.refreshes = String(refreshes);
  }

  async function refresh() {
    if (inFlight) { againAfter = true; return; }
    inFlight = true;
    try {
      // A page opened with user:token@ in its URL resolves relative URLs with those credentials, which fetch()
      // refuses; the browser still sends them (it logged in with them), so they are dropped from the URL only.
      var url = new URL(fragmentUrl, location.href);
      url.username = url.password = '';
      var response = await fetch(url.href, {credentials: 'same-origin', cache: 'no-store'});
      if (!response.ok) { throw new Error('HTTP ' + response.status); }
      apply(await response.text());
      if (socketOpen) { showState('live', 'live'); }
    } catch (error) {
      showState('reconnecting', 'update failed (' + error.message + '), retrying…');
    } finally {
      inFlight = false;
      if (againAfter) { againAfter = false; schedule(); }
    }
  }

  function schedule() {
    if (debounceTimer !== null) { return; }
    var delay = Math.max(DEBOUNCE_MS, lastFetchAt + MIN_INTERVAL_MS - Date.now());
    debounceTimer = setTimeout(function () {
      debounceTimer = null;
      lastFetchAt = Date.now();
      refresh();
    }, delay);
  }

  function connect() {
    var socket;
    try {
      socket = new WebSocket(websocketUrl());
    } catch (error) {
      retry();
      return;
    }
    socket.addEventListener('open', function () {
      socketOpen = true;
      backoffMs = BACKOFF_FIRST_MS;
      showState('live', 'live');
      schedule(); // catch up on what changed while disconnected
    });
    socket.addEventListener('message', schedule);
    socket.addEventListener('close', function () {
      socketOpen = false;
      retry();
    });
    // An error is always followed by close, which retries.
  }

  function retry() {
    showState('reconnecting', 'reconnecting…');
    setTimeout(connect, backoffMs);
    backoffMs = Math.min(backoffMs * 2, BACKOFF_MAX_MS);
  }

  if (!fragmentUrl || !('WebSocket' in window) || !('fetch' in window)) { return; }
  showState('reconnecting', 'connecting…');
  connect();
  setInterval(function () {
    if (!document.hidden) { schedule(); }
  }, TICK_MS);
  document.addEventListener('visibilitychange', function () {
    if (!document.hidden) { schedule(); }
  });
}());
