# Secret-level grants, e.g. roles/secretmanager.secretAccessor for the one service that reads it.
resource "google_secret_manager_secret_iam_binding" "this" {
  for_each = { for role, members in var.iam : role => members if length(members) > 0 }

  project   = var.project_id
  secret_id = google_secret_manager_secret.this.secret_id
  role      = each.key
  members   = each.value
}
