# One Secret Manager secret. Versions (the actual values) are added out of band with
# `gcloud secrets versions add`, so no secret value ever enters Terraform state.

resource "google_secret_manager_secret" "this" {
  project   = var.project_id
  secret_id = var.secret_id
  labels    = var.labels

  replication {
    auto {}
  }
}
