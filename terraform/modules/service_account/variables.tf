variable "project_id" {
  description = "Project that owns the service account."
  type        = string
}

variable "account_id" {
  description = "Account id: the part of the email before @."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.account_id))
    error_message = "account_id must be 6-30 characters: lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "display_name" {
  description = "Display name; defaults to the account id."
  type        = string
  default     = null
}

variable "description" {
  description = "What the account is for."
  type        = string
  default     = null
}

variable "project_roles" {
  description = "Roles granted on the project. Only roles that cannot be granted on a resource belong here."
  type        = list(string)
  default     = []
  validation {
    condition = alltrue([
      for role in var.project_roles : !contains(["roles/owner", "roles/editor", "roles/viewer"], role)
    ])
    error_message = "Basic roles (owner, editor, viewer) are never granted."
  }
  validation {
    # These have resource-level IAM: grant them on the topic, bucket, secret, service or queue.
    condition = alltrue([
      for role in var.project_roles : length(regexall(
        "^roles/(pubsub|storage|secretmanager|run|cloudtasks|iam)\\.", role
      )) == 0
    ])
    error_message = "Pub/Sub, Storage, Secret Manager, Cloud Run, Cloud Tasks and IAM roles must be granted on the resource, not the project."
  }
}

variable "iam" {
  description = "Role => members granted on this service account (authoritative per role)."
  type        = map(list(string))
  default     = {}
  validation {
    condition = alltrue(flatten([
      for members in values(var.iam) : [
        for m in members : !contains(["allUsers", "allAuthenticatedUsers"], m)
      ]
    ]))
    error_message = "allUsers and allAuthenticatedUsers may not be granted."
  }
}
