"""One module per page kind; ``common`` holds what they share (login, roles, CSRF, render)."""
