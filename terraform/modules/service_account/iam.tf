# Project-level roles: only for services without resource-level IAM (Firestore, Cloud Trace).
# The variable's validation refuses roles that can be granted on a resource instead.
resource "google_project_iam_member" "project_roles" {
  for_each = toset(var.project_roles)

  project = var.project_id
  role    = each.value
  member  = local.iam_email
}

# Grants on this service account itself, e.g. roles/iam.serviceAccountUser for whoever mints
# tokens as it. Authoritative per role.
resource "google_service_account_iam_binding" "this" {
  for_each = { for role, members in var.iam : role => members if length(members) > 0 }

  service_account_id = google_service_account.this.name
  role               = each.key
  members            = each.value
}
