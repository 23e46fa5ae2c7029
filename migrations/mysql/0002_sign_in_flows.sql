-- Version 2: sign-in flows (state, nonce and PKCE verifier kept on the server, bound to the
-- visitor's session) and a small fixed-window counter for throttling.

CREATE TABLE IF NOT EXISTS auth_flows (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  session_id CHAR(64) NOT NULL,
  provider VARCHAR(32) NOT NULL,
  state VARCHAR(64) NOT NULL,
  nonce VARCHAR(64) NOT NULL,
  code_verifier VARCHAR(128) NOT NULL,
  next_path VARCHAR(500) NOT NULL DEFAULT '/account',
  link_user_id BIGINT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  KEY ix_auth_flows_session (session_id),
  KEY ix_auth_flows_expires (expires_at),
  CONSTRAINT fk_auth_flows_session FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS rate_limits (
  bucket VARCHAR(191) NOT NULL,
  window_start BIGINT NOT NULL,
  hits INT NOT NULL,
  PRIMARY KEY (bucket, window_start)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
