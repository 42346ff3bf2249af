# The Firestore database (native mode) and its TTL policies. Firestore has no resource-level IAM:
# services get roles/datastore.user on the project (see the service_account module).

resource "google_firestore_database" "this" {
  project                           = var.project_id
  name                              = var.name
  location_id                       = var.location_id
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = var.concurrency_mode
  point_in_time_recovery_enablement = var.point_in_time_recovery ? "POINT_IN_TIME_RECOVERY_ENABLED" : "POINT_IN_TIME_RECOVERY_DISABLED"
  delete_protection_state           = var.delete_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  # ABANDON: terraform destroy forgets the database instead of deleting every document.
  deletion_policy = var.deletion_policy
}

# A TTL policy deletes a document some time (typically within 24 h) after the timestamp in
# `field` has passed. Policies apply to a collection group: every collection with that id.
resource "google_firestore_field" "ttl" {
  for_each = var.ttl_fields

  project    = var.project_id
  database   = google_firestore_database.this.name
  collection = each.value.collection
  field      = each.value.field

  ttl_config {}
}
