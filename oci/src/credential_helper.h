// Docker credential helpers (docker-credential-NAME, named by auth.json's "credHelpers" and
// "credsStore"): `docker-credential-NAME get` with the registry host on stdin answers
// {"ServerURL", "Username", "Secret"}; the username "<token>" makes the secret an identity
// token (an OAuth2 refresh token for the registry's token server).
#pragma once

#include <optional>
#include <string>

#include "registry_config.h"

namespace cfs::oci::registry {

// Runs the helper for registry. nullopt when the helper has no credentials for it (it says
// "credentials not found"); any other failure (not installed, killed, an error status, an
// answer that is not the expected JSON) is an error naming the helper, the registry and the
// auth file that chose it (file). Secrets never appear in messages.
std::optional<Credentials> run_credential_helper(const std::string& helper,
                                                 const std::string& registry,
                                                 const std::string& file);

}  // namespace cfs::oci::registry
