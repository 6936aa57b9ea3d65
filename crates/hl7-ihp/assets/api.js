// Requests to /api/v1 with the bearer token. The token is asked for once, when the API
// first answers 401, and kept in sessionStorage: for this tab's session, never on disk
// beyond it, never in the address.

const TOKEN_KEY = "hl7-ihp.token";

/** An answer that was not 2xx: the problem details (RFC 9457) when the API sent them. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem && problem.detail ? problem.detail : `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** The `Authorization` header, when a token is known. */
export function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// One dialog for every request that got a 401 meanwhile.
let asking = null;

/**
 * Asks for the token; resolves when one was entered. `refused` says the one held was
 * answered with 401.
 */
export function askToken(refused) {
  if (asking) return asking;
  if (refused) sessionStorage.removeItem(TOKEN_KEY);
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  document.getElementById("token-error").hidden = !refused;
  asking = new Promise((resolve) => {
    const done = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      input.value = "";
      form.removeEventListener("submit", done);
      dialog.close();
      asking = null;
      resolve();
    };
    form.addEventListener("submit", done);
    // Escape would leave the page without data; the dialog stays until a token is given.
    dialog.addEventListener("cancel", (event) => event.preventDefault(), { once: true });
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/**
 * GET a path of the API as JSON; on 401 asks for the token and tries again. `signal`
 * aborts it (a view that was left).
 */
export async function api(path, { signal } = {}) {
  for (;;) {
    const held = sessionStorage.getItem(TOKEN_KEY);
    const response = await fetch(path, { headers: { Accept: "application/json", ...authHeaders() }, signal });
    if (response.status === 401) {
      await askToken(Boolean(held));
      continue;
    }
    if (!response.ok) {
      let problem = null;
      try {
        problem = await response.json();
      } catch {
        // Not problem details: the status says enough.
      }
      throw new ApiError(response.status, problem);
    }
    return response.json();
  }
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** `/api/v1/patients/{key}` with the key percent-encoded. */
export function patientPath(key, rest = "") {
  return `/api/v1/patients/${encodeURIComponent(key)}${rest}`;
}
