# One Cloud Storage bucket: uniform bucket-level access, public access prevention enforced, and a
# lifecycle rule that deletes objects after delete_after_days.

resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:Access logs would go to a second bucket; Cloud Audit Logs (Data Access) cover who read what when enabled on the project.
  #checkov:skip=CKV_GCP_78:Versioning is a variable, off by default: objects are snapshots written once per run step and deleted by the lifecycle rule; noncurrent copies would only add cost.
  project                     = var.project_id
  name                        = var.name
  location                    = var.location
  storage_class               = var.storage_class
  labels                      = var.labels
  force_destroy               = var.force_destroy
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = var.versioning
  }

  lifecycle_rule {
    condition {
      age = var.delete_after_days
    }
    action {
      type = "Delete"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.versioning ? [1] : []
    content {
      condition {
        days_since_noncurrent_time = var.delete_after_days
        with_state                 = "ARCHIVED"
      }
      action {
        type = "Delete"
      }
    }
  }
}
