// The issue page, where scripts are allowed: drag a story within its region to reorder it. The
// Position fields follow the drag, so "Save the draft" sends the new order; without this script
// the Position fields and the Move up / Move down buttons do the same.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  function renumber(list) {
    list.querySelectorAll("li.story").forEach(function (item, n) {
      var pos = item.querySelector('input[name^="pos-"]');
      if (pos) pos.value = String(n + 1);
    });
  }
  document.querySelectorAll("ol.stories").forEach(function (list) {
    var dragged = null;
    list.querySelectorAll("li.story").forEach(function (item) {
      item.draggable = true;
      item.classList.add("draggable");
      item.addEventListener("dragstart", function (event) {
        dragged = item;
        item.classList.add("dragging");
        event.dataTransfer.effectAllowed = "move";
        event.dataTransfer.setData("text/plain", item.id);
      });
      item.addEventListener("dragend", function () {
        item.classList.remove("dragging");
        dragged = null;
        renumber(list);
      });
      // Cancelling dragenter and dragover is what says "you may drop here" (within a region only).
      item.addEventListener("dragenter", function (event) {
        if (dragged && dragged.parentNode === list) event.preventDefault();
      });
      item.addEventListener("dragover", function (event) {
        if (!dragged || dragged.parentNode !== list) return;
        event.preventDefault();
        if (dragged === item) return;
        var box = item.getBoundingClientRect();
        list.insertBefore(dragged, event.clientY > box.top + box.height / 2 ? item.nextSibling : item);
      });
      item.addEventListener("drop", function (event) {
        event.preventDefault();
        renumber(list);
      });
    });
  });
});
