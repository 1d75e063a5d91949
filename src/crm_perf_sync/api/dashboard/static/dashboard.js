// crm-perf-sync dashboard: draws the charts a page declares. Each chart is an element with
// data-chart="<kind>" followed by a <script type="application/json" class="chart-data"> sibling
// holding its data (never executed: the Content-Security-Policy allows no inline script).
(function () {
  "use strict";
  var lang = document.documentElement.lang || "en";

  function data(el) {
    var next = el.nextElementSibling;
    while (next && !(next.classList && next.classList.contains("chart-data"))) next = next.nextElementSibling;
    return next ? JSON.parse(next.textContent) : null;
  }

  function formatter(unit) {
    var opts = {maximumFractionDigits: 2};
    if (unit === "percent") return function (v) { return v == null ? "–" : (v * 100).toFixed(1) + "%"; };
    return function (v) { return v == null ? "–" : Number(v).toLocaleString(lang, opts); };
  }

  var kinds = {
    trend: function (d, unit) {
      return {
        animation: false,
        grid: {left: 4, right: 4, top: 6, bottom: 4, containLabel: false},
        tooltip: {trigger: "axis", valueFormatter: formatter(unit)},
        xAxis: {type: "category", data: d.labels, show: false},
        yAxis: {type: "value", show: false, scale: true},
        series: [
          {type: "line", data: d.values, symbol: "circle", symbolSize: 4, lineStyle: {width: 2, color: "#1f5fbf"}, itemStyle: {color: "#1f5fbf"}, connectNulls: false},
          {type: "line", data: d.targets, symbol: "none", lineStyle: {width: 1, type: "dashed", color: "#a3211a"}}
        ]
      };
    },
    bars: function (d, unit) {
      return {
        animation: false,
        grid: {left: 8, right: 16, top: 24, bottom: 8, containLabel: true},
        tooltip: {trigger: "axis", valueFormatter: formatter(unit)},
        legend: d.series.length > 1 ? {top: 0} : undefined,
        xAxis: {type: "category", data: d.labels, axisLabel: {interval: 0, rotate: d.labels.length > 8 ? 30 : 0}},
        yAxis: {type: "value", axisLabel: {formatter: formatter(unit)}},
        series: d.series.map(function (s) { return {type: "bar", name: s.name, data: s.values}; })
      };
    },
    lines: function (d, unit) {
      return {
        animation: false,
        grid: {left: 8, right: 16, top: 28, bottom: 8, containLabel: true},
        tooltip: {trigger: "axis", valueFormatter: formatter(unit)},
        legend: {top: 0},
        xAxis: {type: "category", data: d.labels},
        yAxis: {type: "value", axisLabel: {formatter: formatter(unit)}, scale: true},
        series: d.series.map(function (s) {
          return {type: "line", name: s.name, data: s.values, connectNulls: false, lineStyle: s.dashed ? {type: "dashed"} : undefined};
        })
      };
    },
    funnel: function (d) {
      return {
        animation: false,
        tooltip: {trigger: "item"},
        series: [{type: "funnel", sort: "none", left: "5%", width: "90%", minSize: "20%", label: {position: "inside", formatter: "{b}: {c}", color: "#fff", textBorderColor: "#13294b", textBorderWidth: 2}, data: d.labels.map(function (l, i) { return {name: l, value: d.values[i]}; })}]
      };
    }
  };

  var charts = [];

  function draw() {
    if (!window.echarts) return;
    charts.forEach(function (c) { c.dispose(); });
    charts = [];
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var d = data(el), kind = kinds[el.getAttribute("data-chart")];
      if (!d || !kind) return;
      var chart = window.echarts.init(el, null, {renderer: "canvas"});
      chart.setOption(kind(d, el.getAttribute("data-unit")));
      charts.push(chart);
      el.setAttribute("data-drawn", "true");
    });
    document.body.setAttribute("data-charts-drawn", String(charts.length));
  }
  window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });

  // Live pages (<body data-live="version">): when the server says the results changed, the page
  // fetches itself again and swaps its <main> in place (see api/dashboard/live.py). Not while
  // someone is typing in one of its fields: then once they leave it.
  function live() {
    var body = document.body;
    if (!body.hasAttribute("data-live") || !window.EventSource || !window.fetch || !window.DOMParser) return;
    var busy = false, again = false, waiting = false;
    var status = document.getElementById("live-status");

    function editing() {
      var el = document.activeElement;
      return !!(el && el.closest && el.closest("#main") && el.matches("input, select, textarea"));
    }

    function refocus(main, active) {
      // The element the keyboard was on, found again in the new content by its link.
      if (!active || !active.closest || !active.closest("#main")) return;
      var href = active.getAttribute && active.getAttribute("href");
      var same = href && Array.prototype.find.call(main.querySelectorAll("a[href]"), function (a) {
        return a.getAttribute("href") === href;
      });
      (same || main).focus({preventScroll: true});
    }

    function swap(html) {
      var fresh = new DOMParser().parseFromString(html, "text/html");
      var main = fresh.getElementById("main"), old = document.getElementById("main");
      if (!main || !old) return;
      var active = document.activeElement;
      main.setAttribute("tabindex", "-1");
      old.replaceWith(document.adoptNode(main));
      refocus(main, active);
      body.setAttribute("data-live", fresh.body.getAttribute("data-live") || "");
      draw();
      if (status) {
        var time = new Date().toLocaleTimeString(lang);
        status.textContent = status.getAttribute("data-updated").replace("{time}", time);
      }
      body.setAttribute("data-live-updates", String(Number(body.getAttribute("data-live-updates") || 0) + 1));
    }

    function update() {
      if (busy) { again = true; return; }
      if (editing()) {
        if (!waiting) {
          waiting = true;
          document.getElementById("main").addEventListener("focusout", function later() {
            this.removeEventListener("focusout", later);
            waiting = false;
            setTimeout(update, 0);
          });
        }
        return;
      }
      busy = true;
      fetch(window.location.href, {credentials: "same-origin", headers: {Accept: "text/html"}})
        .then(function (answer) {
          // Signed out meanwhile: the page stays as it is; the next full load asks to sign in.
          if (!answer.ok || answer.redirected) throw new Error("not refreshed");
          return answer.text();
        })
        .then(swap)
        .catch(function () {})
        .then(function () {
          busy = false;
          if (again) { again = false; update(); }
        });
    }

    var source = new EventSource("/dashboard/updates?since=" + encodeURIComponent(body.getAttribute("data-live")));
    source.addEventListener("refreshed", function (event) {
      if (JSON.parse(event.data).version !== body.getAttribute("data-live")) update();
    });
  }

  function start() { draw(); live(); }

  // Forms that ask before they act (removing a target).
  document.addEventListener("submit", function (event) {
    var ask = event.target.getAttribute("data-confirm");
    if (ask && !window.confirm(ask)) event.preventDefault();
  });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
