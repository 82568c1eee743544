// CHM's operator pages: the live refresh waits while the keyboard focus is
// inside the page's content, so that replacing it never throws a person
// tabbing through a table back to the top. It resumes once the focus leaves.
document.addEventListener("htmx:beforeRequest", function (event) {
  var live = event.detail.elt;
  if (!live || live.id !== "live") {
    return;
  }
  var focused = document.activeElement;
  if (focused && focused !== live && live.contains(focused)) {
    event.preventDefault();
  }
});
