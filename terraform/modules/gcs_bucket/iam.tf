# Bucket-level grants, e.g. roles/storage.objectUser for the services that read and write objects.
resource "google_storage_bucket_iam_binding" "this" {
  for_each = { for role, members in var.iam : role => members if length(members) > 0 }

  bucket  = google_storage_bucket.this.name
  role    = each.key
  members = each.value
}
