variable "project_id" {
  description = "Project that owns the database."
  type        = string
}

variable "name" {
  description = "Database id; the library uses the (default) database."
  type        = string
  default     = "(default)"
}

variable "location_id" {
  description = "Firestore location: a region (e.g. us-central1) or a multi-region (nam5, eur3). Cannot be changed later."
  type        = string
}

variable "concurrency_mode" {
  description = "OPTIMISTIC, PESSIMISTIC or OPTIMISTIC_WITH_ENTITY_GROUPS."
  type        = string
  default     = "PESSIMISTIC"
  validation {
    condition     = contains(["OPTIMISTIC", "PESSIMISTIC", "OPTIMISTIC_WITH_ENTITY_GROUPS"], var.concurrency_mode)
    error_message = "concurrency_mode must be OPTIMISTIC, PESSIMISTIC or OPTIMISTIC_WITH_ENTITY_GROUPS."
  }
}

variable "point_in_time_recovery" {
  description = "Keep 7 days of point-in-time recovery (billed as storage)."
  type        = bool
  default     = false
}

variable "delete_protection" {
  description = "Refuse deletion of the database through the API."
  type        = bool
  default     = true
}

variable "deletion_policy" {
  description = "ABANDON (forget on destroy) or DELETE."
  type        = string
  default     = "ABANDON"
  validation {
    condition     = contains(["ABANDON", "DELETE"], var.deletion_policy)
    error_message = "deletion_policy must be ABANDON or DELETE."
  }
}

variable "ttl_fields" {
  description = "TTL policies by key: the collection group and the timestamp field whose value is the expiry."
  type = map(object({
    collection = string
    field      = string
  }))
  default = {}
  validation {
    condition = alltrue([
      for f in values(var.ttl_fields) : can(regex("^[A-Za-z_][A-Za-z0-9_]*$", f.collection)) && length(f.field) > 0
    ])
    error_message = "Each TTL field needs a collection group id and a field name."
  }
}
