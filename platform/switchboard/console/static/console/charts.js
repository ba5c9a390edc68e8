/* Draws every <canvas data-chart='{a Chart.js config as JSON}'> with Chart.js, so pages
   only embed data: no inline scripts, and the server alone decides what is plotted.
   Runs once the page is parsed and again on content htmx swaps in. */
(function () {
  "use strict";

  // The console's palette (console.css), in the order datasets take it.
  var PALETTE = ["#2f5bea", "#f79009", "#137a4a", "#7a5af8", "#d92d20", "#5d6b7e"];

  function withDefaults(config) {
    config.options = config.options || {};
    var options = config.options;
    // The .chart-box sets the height; the chart fills it at any width.
    if (options.responsive === undefined) options.responsive = true;
    if (options.maintainAspectRatio === undefined) options.maintainAspectRatio = false;
    var datasets = (config.data && config.data.datasets) || [];
    datasets.forEach(function (dataset, index) {
      var colour = PALETTE[index % PALETTE.length];
      var kind = dataset.type || config.type;
      if (!dataset.borderColor) dataset.borderColor = colour;
      if (!dataset.backgroundColor) {
        // Bars read better slightly translucent; lines take the solid colour for points.
        dataset.backgroundColor = kind === "line" ? colour : colour + "b3";
      }
    });
    return config;
  }

  function canvasesIn(root) {
    var found = Array.prototype.slice.call(root.querySelectorAll("canvas[data-chart]"));
    if (root.matches && root.matches("canvas[data-chart]")) found.push(root);
    return found;
  }

  function draw(root) {
    if (typeof window.Chart === "undefined") {
      console.error("charts.js: Chart.js is not loaded on this page");
      return;
    }
    canvasesIn(root || document).forEach(function (canvas) {
      // htmx:load fires for the whole body too; a canvas is drawn once.
      if (window.Chart.getChart(canvas)) return;
      var config;
      try {
        config = JSON.parse(canvas.getAttribute("data-chart"));
      } catch (error) {
        console.error("charts.js: data-chart is not JSON", canvas, error);
        return;
      }
      new window.Chart(canvas, withDefaults(config));
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { draw(document); });
  } else {
    draw(document);
  }
  document.addEventListener("htmx:load", function (event) { draw(event.target); });
})();
