// Refreshes the status page from status.json every 2 s. It builds the same
// markup as the server's first render (daemon/src/status_page/mod.rs), with
// textContent only, so nothing a registrant sends is ever parsed as HTML.
(function () {
  "use strict";
  var PERIOD_MS = 2000;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (cell) { tr.appendChild(cell); });
    return tr;
  }

  function latency(micros) {
    if (micros === null || micros === undefined) return "-";
    var ms = micros / 1000;
    if (ms < 10) return ms.toFixed(2) + "ms";
    if (ms < 1000) return ms.toFixed(1) + "ms";
    return (ms / 1000).toFixed(2) + "s";
  }

  // As status.rs's ejections_text: "2", or "2 (29s left)" while ejected.
  function duration(millis) {
    if (millis < 10000) return (Math.ceil(millis / 100) / 10).toFixed(1) + "s";
    var secs = Math.ceil(millis / 1000);
    if (secs < 120) return secs + "s";
    var rest = secs % 60;
    return Math.floor(secs / 60) + "m" + (rest < 10 ? "0" : "") + rest + "s";
  }

  function ejections(instance) {
    var times = String(instance.times_ejected || 0);
    if (!instance.ejected) return times;
    return times + " (" + duration(instance.ejection_remaining_ms || 0) + " left)";
  }

  function head(names) {
    var thead = document.createElement("thead");
    thead.appendChild(row(names.map(function (name) {
      var numeric = name.charAt(0) === "#";
      return el("th", numeric ? "num" : "", numeric ? name.slice(1) : name);
    })));
    return thead;
  }

  function instanceRow(instance) {
    var tr = row([
      el("td", "id", instance.id),
      el("td", "state " + instance.state, instance.state),
      el("td", "num in-flight", instance.in_flight +
        (instance.max_concurrent_calls > 0 ? "/" + instance.max_concurrent_calls : "")),
      el("td", "num rate", Number(instance.calls_per_second).toFixed(1)),
      el("td", "num p50", latency(instance.latency_p50_micros)),
      el("td", "num p99", latency(instance.latency_p99_micros)),
      el("td", "num calls", instance.calls),
      el("td", "num errors" + (instance.errors > 0 ? " some" : ""), instance.errors),
      el("td", "num ejections" + (instance.ejected ? " ejected" : ""), ejections(instance)),
      el("td", "num weight", instance.weight),
      // As status.rs's routers_text.
      el("td", "num routers", instance.routers > 0 ? instance.routers : "-"),
      (function () {
        var td = el("td", "labels");
        Object.keys(instance.labels || {}).sort().forEach(function (key) {
          td.appendChild(el("span", "label", key + "=" + instance.labels[key]));
        });
        return td;
      })(),
      el("td", "since", instance.connected_since || "-")
    ]);
    tr.dataset.instance = instance.id;
    if (instance.ejected) tr.className = "ejected";
    return tr;
  }

  function serviceSection(service) {
    var section = el("section", "service");
    section.dataset.service = service.name;
    var h2 = el("h2", "", service.name + " ");
    h2.appendChild(el("span", "meta", [
      service.strategy,
      service.instances.length + " instances",
      service.in_flight + " in flight",
      (service.waiting || 0) + " waiting",
      service.calls_started + " calls",
      service.calls_retried + " retried",
      service.errors_recorded + " errors",
      service.instances_ejected + " ejected",
      service.ejections + " ejections"
    ].join(" \u00b7 ")));
    section.appendChild(h2);

    // As status.rs's concurrency_text.
    if ((service.concurrency_limits || []).length > 0) {
      var limits = el("ul", "limits");
      service.concurrency_limits.forEach(function (l) {
        limits.appendChild(el("li", "", "limit " + (l.method || "(service)") + ": " + l.in_flight + "/" +
          l.max_calls + " in flight, " + l.waiting + " waiting, " + l.refused + " refused"));
      });
      section.appendChild(limits);
    }

    if ((service.warnings || []).length > 0) {
      var warnings = el("ul", "warnings");
      service.warnings.forEach(function (warning) { warnings.appendChild(el("li", "", warning)); });
      section.appendChild(warnings);
    }

    var table = el("table", "instances");
    table.appendChild(head(["Instance", "State", "#In flight", "#Calls/s", "#p50", "#p99",
      "#Calls", "#Errors", "#Ejections", "#Weight", "#Routers", "Labels", "Connected since"]));
    var body = document.createElement("tbody");
    var instances = service.instances.slice().sort(function (a, b) {
      return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    });
    instances.forEach(function (instance) { body.appendChild(instanceRow(instance)); });
    if (instances.length === 0) {
      var none = el("td", "none", "No instance registered.");
      none.colSpan = 12;
      body.appendChild(row([none]));
    }
    table.appendChild(body);
    section.appendChild(table);

    var h3 = el("h3", "", "Recent errors ");
    h3.appendChild(el("span", "meta", "(" + service.recent_errors.length + " of " +
      service.errors_recorded + ", newest first)"));
    section.appendChild(h3);
    if (service.recent_errors.length === 0) {
      section.appendChild(el("p", "none", "None."));
    } else {
      var errors = el("table", "errors");
      errors.appendChild(head(["Time", "Method", "Instance", "Code", "Message"]));
      var rows = document.createElement("tbody");
      service.recent_errors.forEach(function (error) {
        rows.appendChild(row([
          el("td", "time", error.time || "-"),
          el("td", "method", error.method),
          el("td", "id", error.instance || "(none)"),
          el("td", "code", error.code),
          el("td", "message", error.message)
        ]));
      });
      errors.appendChild(rows);
      section.appendChild(errors);
    }
    return section;
  }

  function render(status) {
    var main = el("main");
    main.id = "services";
    status.services.forEach(function (service) { main.appendChild(serviceSection(service)); });
    if (status.services.length === 0) {
      main.appendChild(el("p", "none", "No service is known yet: none has registered."));
    }
    document.getElementById("services").replaceWith(main);
    document.getElementById("router-id").textContent = status.router_id;
    document.title = "grpc-router " + status.router_id;
    var updated = document.getElementById("updated");
    updated.className = "";
    updated.textContent = "Updated at " + new Date().toISOString().replace(/\.\d+Z$/, "Z") +
      "; refreshes every 2 s.";
    document.body.dataset.source = "json";
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  }

  function refresh() {
    fetch("status.json", { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("status.json answered HTTP " + response.status);
        return response.json();
      })
      .then(render)
      .catch(function (error) {
        var updated = document.getElementById("updated");
        updated.className = "stale";
        updated.textContent = "Not updated: " + error.message + " (retrying every 2 s).";
      })
      .then(function () { setTimeout(refresh, PERIOD_MS); });
  }

  setTimeout(refresh, PERIOD_MS);
})();
