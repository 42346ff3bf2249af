# One service account: the identity of one service (or of one token-minting role such as the
# Pub/Sub push invoker). Resource-level grants to it are made by the modules that own the
# resources; only roles that have no resource-level form are granted on the project here.

resource "google_service_account" "this" {
  project      = var.project_id
  account_id   = var.account_id
  display_name = coalesce(var.display_name, var.account_id)
  description  = var.description
}

locals {
  # Built from inputs rather than read from the resource so it is known at plan time and can
  # key for_each maps elsewhere.
  email     = "${var.account_id}@${var.project_id}.iam.gserviceaccount.com"
  iam_email = "serviceAccount:${local.email}"
}
