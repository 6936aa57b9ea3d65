// Building DOM nodes. Text, and above all text from devices, only ever goes in as text
// nodes (textContent): nothing here parses HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

// Sets the properties of `h` and `s` on an element: `class`, `text`, `title`, `data`
// (dataset), `on` (event listeners), `attrs`, and any other key as an attribute.
function apply(node, props) {
  if (!props) return node;
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.setAttribute("class", value);
    else if (key === "text") node.textContent = String(value);
    else if (key === "data") Object.assign(node.dataset, value);
    else if (key === "on") for (const [type, fn] of Object.entries(value)) node.addEventListener(type, fn);
    else if (key === "attrs") for (const [name, v] of Object.entries(value)) node.setAttribute(name, v);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An HTML element: `h("td", {class: "n"}, "text", child)`. */
export function h(tag, props, ...children) {
  return append(apply(document.createElement(tag), props), children);
}

/** An SVG element. */
export function s(tag, props, ...children) {
  return append(apply(document.createElementNS(SVG_NS, tag), props), children);
}

/** Removes every child. */
export function clear(node) {
  node.replaceChildren();
  return node;
}

/** Sets text only when it changed, so that a second's tick touches few nodes. */
export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

/** Sets or removes a class. */
export function toggle(node, name, on) {
  node.classList.toggle(name, Boolean(on));
}

/** Sets an attribute only when it changed. */
export function setAttr(node, name, value) {
  if (value === null || value === undefined) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value));
  }
}
